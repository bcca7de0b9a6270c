"""What both HTTP surfaces (the API in ``api/`` and the sidebar panel in ``panel/``) share.

The request's audit context and acting user, the roles (Django groups), and the signed panel
links the API issues and the panel redeems. ``api`` and ``panel`` import from here and never
from each other.
"""
