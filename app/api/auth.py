"""Login, token refresh, logout, "who am I" and own-password change (``/api/auth/…``).

Two ways to stay logged in, both from ``POST /api/auth/login``:

* Bearer tokens (scripts, SDKs): the answer carries an access and a refresh
  token; send ``Authorization: Bearer <access>`` and refresh before it expires.
* A cookie session (the console): ``{"session": true}`` sets the HttpOnly,
  SameSite=Strict ``aivonx_session`` cookie and a readable ``aivonx_xsrf``
  cookie; every unsafe request must echo the latter in ``X-XSRFToken``. The
  answer then carries no token at all, so script injected into the page has
  nothing to steal.
"""

from __future__ import annotations

from typing import Any

from app.api.base import ApiError, BaseHandler, ManagementHandler
from app.auth.service import SESSION_COOKIE, XSRF_COOKIE, AuthService, Session, check_xsrf, public_user


def _auth(handler: BaseHandler) -> AuthService:
    return handler.services.auth


def set_session_cookies(handler: BaseHandler, session: Session) -> None:
    secure = handler.request.protocol == "https"
    handler.set_cookie(SESSION_COOKIE, session.cookie, path="/", max_age=session.expires_in, httponly=True,
                       secure=secure, samesite="Strict")
    # Readable by the console's script (double submit); useless to another site, which cannot read it.
    handler.set_cookie(XSRF_COOKIE, session.xsrf, path="/", max_age=session.expires_in, secure=secure,
                       samesite="Strict")


def clear_session_cookies(handler: BaseHandler) -> None:
    secure = handler.request.protocol == "https"
    for name in (SESSION_COOKIE, XSRF_COOKIE):
        handler.clear_cookie(name, path="/", secure=secure, samesite="Strict")


class LoginHandler(BaseHandler):
    async def post(self) -> None:
        """Log in with a username and password.

        Repeated failures for one user or from one address are answered with 429 and
        ``Retry-After`` (first a growing delay, then a pause of 15 minutes).
        ---
        summary: Log in
        tags: [auth]
        security: []
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [username, password]
                properties:
                  username: {type: string}
                  password: {type: string, format: password}
                  session:
                    type: boolean
                    description: set an HttpOnly session cookie (the console) instead of returning tokens
        responses:
          200:
            description: Logged in. With `session` the body has no tokens and the cookies are set.
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    access: {type: string, description: access JWT (15 minutes)}
                    refresh: {type: string, description: refresh JWT (7 days)}
                    token_type: {type: string, enum: [Bearer]}
                    expires_in: {type: integer, description: seconds the access token is valid}
                    refresh_expires_in: {type: integer}
                    session: {type: boolean, description: true when a cookie session was started instead}
                    xsrf_token: {type: string, description: cookie sessions - send it in X-XSRFToken}
                    user:
                      type: object
                      properties:
                        id: {type: string}
                        username: {type: string}
                        role: {type: string, enum: [admin, viewer]}
          400: {description: Invalid body; field errors in `fields`}
          401: {description: "Not logged in, or a bad, expired or revoked credential"}
          429: {description: Too many failed logins; see Retry-After}
          503: {description: The database is unavailable}
        """
        body = self.json_body()
        errors = {key: "unknown field" for key in body if key not in ("username", "password", "session")}
        username, password, session = body.get("username"), body.get("password"), body.get("session", False)
        if not isinstance(username, str) or not username.strip() or len(username) > 256:
            errors["username"] = "a username is required"
        if not isinstance(password, str) or not password or len(password) > 1024:
            errors["password"] = "a password is required"
        if not isinstance(session, bool):
            errors["session"] = "must be true or false"
        if errors:
            raise ApiError(400, "invalid login", fields=errors)
        auth = _auth(self)
        user = await auth.login(username.strip(), password, self.client_ip())
        if session:
            new = auth.issue_session(user)
            set_session_cookies(self, new)
            self.send_json({"session": True, "expires_in": new.expires_in, "xsrf_token": new.xsrf,
                            "user": public_user(user)})
            return
        self.send_json(auth.issue_tokens(user))


class RefreshHandler(BaseHandler):
    async def post(self) -> None:
        """Trade a refresh token for a new access and refresh token.

        The refresh token sent is revoked (rotation): using it twice is a 401.
        ---
        summary: Refresh tokens
        tags: [auth]
        security: []
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [refresh]
                properties:
                  refresh: {type: string}
        responses:
          200:
            description: A new token pair
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    access: {type: string, description: access JWT (15 minutes)}
                    refresh: {type: string, description: refresh JWT (7 days)}
                    token_type: {type: string, enum: [Bearer]}
                    expires_in: {type: integer, description: seconds the access token is valid}
                    refresh_expires_in: {type: integer}
                    session: {type: boolean, description: true when a cookie session was started instead}
                    xsrf_token: {type: string, description: cookie sessions - send it in X-XSRFToken}
                    user:
                      type: object
                      properties:
                        id: {type: string}
                        username: {type: string}
                        role: {type: string, enum: [admin, viewer]}
          400: {description: Invalid body; field errors in `fields`}
          401: {description: "Not logged in, or a bad, expired or revoked credential"}
          503: {description: The database is unavailable}
        """
        body = self.json_body()
        errors = {key: "unknown field" for key in body if key != "refresh"}
        if not isinstance(body.get("refresh"), str) or not body["refresh"]:
            errors["refresh"] = "the refresh token is required"
        if errors:
            raise ApiError(400, "invalid refresh request", fields=errors)
        self.send_json(await _auth(self).refresh(body["refresh"]))


class LogoutHandler(BaseHandler):
    async def post(self) -> None:
        """Log out: revoke the refresh token sent, and/or end the cookie session.

        Needs no valid access token (it may have expired already). Access tokens are
        not revocable; they expire within 15 minutes.
        ---
        summary: Log out
        tags: [auth]
        security: []
        requestBody:
          required: false
          content:
            application/json:
              schema:
                type: object
                properties:
                  refresh: {type: string, description: the refresh token to revoke}
        responses:
          200:
            description: Logged out
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    logged_out: {type: boolean}
          400: {description: Invalid body; field errors in `fields`}
          401: {description: "Not logged in, or a bad, expired or revoked credential"}
          403: {description: XSRF token missing or incorrect (cookie sessions)}
          503: {description: The database is unavailable}
        """
        body = self.json_body(required=False)
        errors = {key: "unknown field" for key in body if key != "refresh"}
        refresh = body.get("refresh")
        if refresh is not None and (not isinstance(refresh, str) or not refresh):
            errors["refresh"] = "must be the refresh token"
        if errors:
            raise ApiError(400, "invalid logout request", fields=errors)
        auth = _auth(self)
        cookie = self.get_cookie(SESSION_COOKIE)
        if refresh is None and not cookie:
            raise ApiError(400, 'nothing to log out: send {"refresh": "<refresh token>"} or use a session cookie')
        if cookie:
            principal = await auth.session_principal(cookie)
            if principal is not None:
                check_xsrf(self, principal)
                await auth.end_session(principal)
            clear_session_cookies(self)
        if refresh is not None:
            await auth.revoke_refresh(refresh)
        self.send_json({"logged_out": True})


class MeHandler(ManagementHandler):
    def get(self) -> None:
        """The logged-in user and how they authenticated.

        ---
        summary: Current user
        tags: [auth]
        responses:
          200:
            description: The caller
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    id: {type: string}
                    username: {type: string}
                    role: {type: string, enum: [admin, viewer]}
                    via: {type: string, enum: [jwt, session, api_token]}
                    xsrf_token: {type: string}
          401: {description: "Not logged in, or a bad, expired or revoked credential"}
        """
        p = self.principal
        me: dict[str, Any] = {"id": p.user_id, "username": p.username, "role": p.role, "via": p.via}
        if p.via == "session":
            me["xsrf_token"] = p.xsrf
        self.send_json(me)


class PasswordHandler(ManagementHandler):
    def required_role(self) -> str | None:
        return "viewer"  # everyone may change their own password

    async def post(self) -> None:
        """Change one's own password (the current one is required).

        Every token and session issued before stops working; the answer carries new
        ones for the way the caller is logged in (a new token pair, or new cookies).
        ---
        summary: Change own password
        tags: [auth]
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [current_password, new_password]
                properties:
                  current_password: {type: string, format: password}
                  new_password: {type: string, format: password, minLength: 8,
                                 description: 8 characters to 72 bytes (bcrypt's limit)}
        responses:
          200:
            description: Changed
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    changed: {type: boolean}
                    access: {type: string}
                    refresh: {type: string}
                    token_type: {type: string}
                    expires_in: {type: integer}
                    xsrf_token: {type: string}
          400: {description: Invalid body; field errors in `fields`}
          401: {description: "Not logged in, or a bad, expired or revoked credential"}
          403: {description: XSRF token missing or incorrect (cookie sessions)}
          429: {description: Too many failed logins; see Retry-After}
          503: {description: The database is unavailable}
        """
        body = self.json_body()
        unknown = {key: "unknown field" for key in body if key not in ("current_password", "new_password")}
        if unknown:
            raise ApiError(400, "invalid password change", fields=unknown)
        auth = _auth(self)
        user = await auth.change_password(self.principal, body.get("current_password"), body.get("new_password"),
                                          self.client_ip())
        answer: dict[str, Any] = {"changed": True}
        if self.principal.via == "jwt":
            answer.update(auth.issue_tokens(user))
        elif self.principal.via == "session":
            await auth.end_session(self.principal)
            new = auth.issue_session(user)
            set_session_cookies(self, new)
            answer["xsrf_token"] = new.xsrf
        self.send_json(answer)


ROUTES: list[tuple[str, type]] = [
    (r"/api/auth/login", LoginHandler),
    (r"/api/auth/refresh", RefreshHandler),
    (r"/api/auth/logout", LogoutHandler),
    (r"/api/auth/me", MeHandler),
    (r"/api/auth/password", PasswordHandler),
]
