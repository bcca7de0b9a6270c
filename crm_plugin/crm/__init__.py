"""Agents identified by their CRM (docs/SPEC.md §9): assertions, identities, access tokens.

A CRM (or Zendesk) signs a short JWT naming its agent; `assertions` verifies it, `identities`
finds (or, where allowed, provisions) the Django user linked to it, and `tokens` hands out a
short-lived access token the REST API accepts as ``Authorization: Bearer``. `launch` is what the
panel's launch views call. The domain (``twosv``) knows nothing of any of this.
"""
