"""The web console under ``/console``: the admin back office and the customer portal.

Server-rendered pages (Jinja2) with a little vanilla JavaScript, no CDN and no build step.
Every write calls the same billing services, with the same checks and audit entries, as the
admin API (``gateway/admin``); sessions, CSRF tokens and sign-in throttling live here.
"""
