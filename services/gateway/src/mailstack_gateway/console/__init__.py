"""The web console at /console: a tenant's emails, their timelines, the providers' health.

Signed in with an API key (read scope) through a form; the session lives in Postgres and in an
HttpOnly, SameSite=Strict cookie. Server-rendered Jinja2 pages, plain forms, one stylesheet,
no script: see docs/security.md for the session, CSRF and header rules.
"""

from mailstack_gateway.console.queries import ConsoleQueries
from mailstack_gateway.console.router import Console, ConsoleConfig, install
from mailstack_gateway.console.sessions import SessionStore

__all__ = ["Console", "ConsoleConfig", "ConsoleQueries", "SessionStore", "install"]
