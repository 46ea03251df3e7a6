"""API tokens and gateway keys (``/api/proxy/keys``, admin only).

* ``kind: "api"`` (``avx_…``): a script's credential for the management API,
  with the role of the user it belongs to.
* ``kind: "gateway"`` (``avx_gw_…``): a client's key for the Ollama and ``/v1``
  routes when ``require_api_key`` is on, with optional limits: ``rpm`` (requests
  per minute, a sliding window) and ``tpd`` (tokens in + out per UTC day, counted
  from finished requests). Over a limit the gateway answers 429 with
  ``Retry-After``. The limits are enforced by each proxy process on its own traffic.

A new key's secret is in the creation answer and nowhere else, ever: only its
sha256 is stored. Listings show the visible prefix, name, owner, creation and
last-use times (recorded at most once a minute) and whether it is revoked.
"""

from __future__ import annotations

from app.api.base import ManagementHandler


class AdminOnly(ManagementHandler):
    def required_role(self) -> str | None:
        return "admin"


class KeysHandler(AdminOnly):
    async def get(self) -> None:
        """List API tokens and gateway keys (never their secrets).

        ---
        summary: List keys
        tags: [keys]
        parameters:
          - {name: user_id, in: query, required: false, schema: {type: string}}
          - {name: kind, in: query, required: false, schema: {type: string, enum: [api, gateway]}}
        responses:
          200:
            description: Keys, oldest first, revoked ones included
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    keys:
                      type: array
                      items:
                        type: object
                        properties:
                          id: {type: string}
                          name: {type: string}
                          kind: {type: string, enum: [api, gateway]}
                          prefix: {type: string}
                          user_id: {type: string}
                          username: {type: string, nullable: true}
                          created_at: {type: string, format: date-time}
                          last_used_at: {type: string, format: date-time, nullable: true}
                          revoked: {type: boolean}
                          revoked_at: {type: string, format: date-time, nullable: true}
                          rpm: {type: integer, nullable: true, description: requests per minute (gateway keys)}
                          tpd: {type: integer, nullable: true, description: tokens per day (gateway keys)}
          400: {description: Unknown kind}
          401: {description: Not logged in}
          403: {description: Needs the admin role}
        """
        user_id = self.get_query_argument("user_id", None) or None
        kind = self.get_query_argument("kind", None) or None
        self.send_json({"keys": await self.services.auth.list_keys(user_id, kind)})

    async def post(self) -> None:
        """Create an API token or gateway key; the secret is shown only in this answer.

        ---
        summary: Create a key
        tags: [keys]
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [name]
                properties:
                  name: {type: string, maxLength: 100, description: what the key is for}
                  kind: {type: string, enum: [api, gateway], default: api}
                  user_id: {type: string, description: the owner (default the caller)}
                  rpm: {type: integer, minimum: 1, maximum: 1000000, nullable: true,
                        description: "gateway keys: requests per minute (default: no limit)"}
                  tpd: {type: integer, minimum: 1, maximum: 1000000000000, nullable: true,
                        description: "gateway keys: tokens (in + out) per UTC day (default: no limit)"}
        responses:
          201:
            description: Created. Store `secret` now; it cannot be shown again.
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    secret: {type: string}
                    key:
                      type: object
                      properties:
                        id: {type: string}
                        name: {type: string}
                        kind: {type: string, enum: [api, gateway]}
                        prefix: {type: string}
                        user_id: {type: string}
                        username: {type: string}
                        created_at: {type: string, format: date-time}
                        last_used_at: {type: string, format: date-time, nullable: true}
                        revoked: {type: boolean}
                        rpm: {type: integer, nullable: true}
                        tpd: {type: integer, nullable: true}
          400: {description: Invalid field; errors in `fields`}
          401: {description: Not logged in}
          403: {description: Needs the admin role}
        """
        secret, record = await self.services.auth.create_key(self.json_body(), self.principal)
        self.send_json({"secret": secret, "key": record}, 201)


class KeyHandler(AdminOnly):
    async def get(self, key_id: str) -> None:
        """One key (never its secret).

        ---
        summary: Get a key
        tags: [keys]
        parameters:
          - {name: key_id, in: path, required: true, schema: {type: string}}
        responses:
          200:
            description: The key
            content:
              application/json:
                schema: {type: object}
          401: {description: Not logged in}
          403: {description: Needs the admin role}
          404: {description: No such key}
        """
        self.send_json(await self.services.auth.get_key(key_id))

    async def patch(self, key_id: str) -> None:
        """Rename a key or change a gateway key's limits (``null`` removes one); applies at once.

        ---
        summary: Update a key
        tags: [keys]
        parameters:
          - {name: key_id, in: path, required: true, schema: {type: string}}
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                properties:
                  name: {type: string, maxLength: 100}
                  rpm: {type: integer, minimum: 1, maximum: 1000000, nullable: true}
                  tpd: {type: integer, minimum: 1, maximum: 1000000000000, nullable: true}
              example: {rpm: 60, tpd: 1000000}
        responses:
          200:
            description: The key after the change
            content:
              application/json:
                schema: {type: object}
          400: {description: "Invalid field (or limits on an API token); errors in `fields`"}
          401: {description: Not logged in}
          403: {description: Needs the admin role}
          404: {description: No such key}
          503: {description: The store is unavailable; nothing was changed}
        """
        self.send_json(await self.services.auth.update_key(key_id, self.json_body()))

    async def delete(self, key_id: str) -> None:
        """Revoke a key. It stops working at once here, within seconds on other instances.

        ---
        summary: Revoke a key
        tags: [keys]
        parameters:
          - {name: key_id, in: path, required: true, schema: {type: string}}
        responses:
          200:
            description: The revoked key
            content:
              application/json:
                schema: {type: object}
          401: {description: Not logged in}
          403: {description: Needs the admin role}
          404: {description: No such key}
        """
        self.send_json(await self.services.auth.revoke_key(key_id))


ROUTES: list[tuple[str, type]] = [
    (r"/api/proxy/keys", KeysHandler),
    (r"/api/proxy/keys/([^/]+)", KeyHandler),
]
