"""People who may use the management API (``/api/users``, admin only).

Passwords go in, never out; resetting one ends that user's sessions. The last
admin can be neither deleted nor demoted (409), so the fleet never becomes
unmanageable.
"""

from __future__ import annotations

from app.api.base import ManagementHandler


class AdminOnly(ManagementHandler):
    def required_role(self) -> str | None:
        return "admin"


class UsersHandler(AdminOnly):
    async def get(self) -> None:
        """List users.

        ---
        summary: List users
        tags: [users]
        responses:
          200:
            description: Every user, sorted by name
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    users:
                      type: array
                      items:
                        type: object
                        properties:
                          id: {type: string}
                          username: {type: string}
                          role: {type: string, enum: [admin, viewer]}
                          created_at: {type: string, format: date-time}
                          updated_at: {type: string, format: date-time}
          401: {description: Not logged in}
          403: {description: Needs the admin role}
          503: {description: The database is unavailable}
        """
        self.send_json({"users": await self.services.auth.list_users()})

    async def post(self) -> None:
        """Create a user.

        ---
        summary: Create a user
        tags: [users]
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [username, password]
                properties:
                  username: {type: string, pattern: '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'}
                  password: {type: string, format: password, minLength: 8,
                             description: 8 characters to 72 bytes (bcrypt's limit)}
                  role: {type: string, enum: [admin, viewer], default: viewer}
        responses:
          201:
            description: Created
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    id: {type: string}
                    username: {type: string}
                    role: {type: string, enum: [admin, viewer]}
                    created_at: {type: string, format: date-time}
                    updated_at: {type: string, format: date-time}
          400: {description: Invalid user; field errors in `fields`}
          401: {description: Not logged in}
          403: {description: Needs the admin role}
          409: {description: The username is taken}
          503: {description: The database is unavailable}
        """
        self.send_json(await self.services.auth.create_user(self.json_body()), 201)


class UserHandler(AdminOnly):
    async def get(self, user_id: str) -> None:
        """One user.

        ---
        summary: Get a user
        tags: [users]
        parameters:
          - {name: user_id, in: path, required: true, schema: {type: string}}
        responses:
          200:
            description: The user
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    id: {type: string}
                    username: {type: string}
                    role: {type: string, enum: [admin, viewer]}
                    created_at: {type: string, format: date-time}
                    updated_at: {type: string, format: date-time}
          401: {description: Not logged in}
          403: {description: Needs the admin role}
          404: {description: No such user}
        """
        self.send_json(await self.services.auth.get_user(user_id))

    async def patch(self, user_id: str) -> None:
        """Change a user's role or name, or reset their password.

        A password reset ends every session and token of that user (not their API
        tokens or gateway keys). Demoting the last admin is refused.
        ---
        summary: Update a user
        tags: [users]
        parameters:
          - {name: user_id, in: path, required: true, schema: {type: string}}
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                properties:
                  username: {type: string}
                  password: {type: string, format: password, minLength: 8}
                  role: {type: string, enum: [admin, viewer]}
        responses:
          200:
            description: The updated user
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    id: {type: string}
                    username: {type: string}
                    role: {type: string, enum: [admin, viewer]}
                    created_at: {type: string, format: date-time}
                    updated_at: {type: string, format: date-time}
          400: {description: Invalid field; errors in `fields`}
          401: {description: Not logged in}
          403: {description: Needs the admin role}
          404: {description: No such user}
          409: {description: "Username taken, or this is the last admin"}
        """
        self.send_json(await self.services.auth.update_user(user_id, self.json_body()))

    async def delete(self, user_id: str) -> None:
        """Delete a user and revoke their API tokens and gateway keys.

        ---
        summary: Delete a user
        tags: [users]
        parameters:
          - {name: user_id, in: path, required: true, schema: {type: string}}
        responses:
          200:
            description: The deleted user
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    deleted: {type: boolean}
                    user: {type: object}
          401: {description: Not logged in}
          403: {description: Needs the admin role}
          404: {description: No such user}
          409: {description: This is the last admin}
        """
        user = await self.services.auth.delete_user(user_id)
        self.send_json({"deleted": True, "user": user})


ROUTES: list[tuple[str, type]] = [
    (r"/api/users", UsersHandler),
    (r"/api/users/([^/]+)", UserHandler),
]
