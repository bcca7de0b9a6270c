"""What the CRM integration keeps: spent assertion ids, identity links, hashed access tokens."""

from django.conf import settings
from django.db import models


class UsedAssertion(models.Model):
    """An assertion's ``jti``, spent: the same (issuer, jti) is refused until it expires.

    Kept in the database, not the cache, so single use holds across every worker and process
    (and while the cache is down). Rows are deleted once the assertion could no longer verify.
    """

    issuer = models.CharField(max_length=255)
    jti = models.CharField(max_length=255)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "jti"], name="crm_used_assertion_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.issuer} {self.jti}"


class CrmIdentity(models.Model):
    """The Django user a CRM's agent (issuer, ``sub``) acts as. Linked by an admin, or
    provisioned on first sight where ``CRM_AGENT_AUTO_PROVISION`` allows it."""

    issuer = models.CharField(
        max_length=255,
        help_text="The assertion's issuer: CRM_JWT_ISSUER, or https://<subdomain>.zendesk.com.",
    )
    subject = models.CharField(
        max_length=255, help_text="The agent's id in the CRM (the assertion's sub)."
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="crm_identities"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "CRM identity"
        verbose_name_plural = "CRM identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="crm_identity_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.issuer} / {self.subject}"


class AccessToken(models.Model):
    """A short-lived API credential handed out for a verified assertion; only its hash is kept.

    It authenticates while unexpired, while its identity link exists (unlinking deletes it) and
    while its user is an active member of ``support_agent`` (checked on every request).
    """

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="crm_access_tokens"
    )
    identity = models.ForeignKey(
        CrmIdentity, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    issuer = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"access token of user {self.user_id} until {self.expires_at:%Y-%m-%d %H:%M:%S}"


class PanelSession(models.Model):
    """A framed panel's session (``POST /panel/launch/``): it travels with the page, not a cookie.

    The launch hands the page a random token; the panel's script sends it as ``X-Panel-Session``
    on every request (crm_plugin/panel/frame_session.py). Only its hash is kept. It lasts until
    ``expires_at`` (``CRM_PANEL_SESSION_TTL`` after the launch) and while its user may act as an
    agent with ``credential`` still standing, checked on every request (panel/identity.py).
    ``data`` is what the panel keeps for the agent (its troubleshooting sessions, its messages),
    which a cookie session keeps in the Django session.
    """

    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="crm_panel_sessions"
    )
    credential = models.CharField(max_length=128)
    issuer = models.CharField(max_length=255)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"panel session of user {self.user_id} until {self.expires_at:%Y-%m-%d %H:%M:%S}"
