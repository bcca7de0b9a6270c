from django.urls import path

from crm_plugin.panel import launch, timeline, views

app_name = "panel"

urlpatterns = [
    # GET: the entry page (the link's token is in the URL's fragment); POST: enter the panel.
    path("enter/", views.panel_enter, name="enter"),
    # POST from a CRM with a signed assertion (launch.py): a panel session without a cookie.
    path("launch/", launch.panel_launch, name="launch"),
    path("launch/zendesk/", launch.panel_launch_zendesk, name="launch-zendesk"),
    path("launch/zendesk/open/", launch.panel_launch_zendesk_open, name="launch-zendesk-open"),
    path("customers/<str:customer_id>/", views.customer_panel, name="customer"),
    path("customers/<str:customer_id>/answer/", views.answer, name="answer"),
    path("customers/<str:customer_id>/answers/reset/", views.answers_reset, name="answers-reset"),
    path("customers/<str:customer_id>/method/", views.method_choose, name="method"),
    path("customers/<str:customer_id>/verify-phone/", views.verify_phone, name="verify-phone"),
    path("customers/<str:customer_id>/lookup/", views.lookup_request, name="lookup"),
    path("customers/<str:customer_id>/lookup/status/", views.lookup_status, name="lookup-status"),
    path(
        "customers/<str:customer_id>/methods/<str:method_id>/timeline/",
        timeline.method_timeline_fragment,
        name="timeline",
    ),
    path("customers/<str:customer_id>/close/", views.close_session, name="close"),
    path("customers/<str:customer_id>/new-session/", views.session_new, name="new-session"),
]
