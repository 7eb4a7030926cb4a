"""Every page route: accounts (and their API tokens), projects and rooms. The JSON API lives at /api/v1/."""

from django.contrib.auth import views as auth_views
from django.urls import path

from chat import views
from projects import views as project_views

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("login/", views.RateLimitedLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/tokens/", views.token_list, name="account-tokens"),
    path("account/tokens/revoke/", views.token_revoke, name="account-token-revoke"),
    path("account/notifications/", views.notification_settings, name="account-notifications"),
    path("account/profile/", views.profile, name="account-profile"),
    path("", project_views.project_list, name="project-list"),
    path("p/<slug:slug>/", project_views.project_detail, name="project-detail"),
    path("p/<slug:slug>/invite/", project_views.project_invite, name="project-invite"),
    path("p/<slug:slug>/leave/", project_views.project_leave, name="project-leave"),
    path("p/<slug:slug>/members/<int:user_id>/remove/", project_views.member_remove, name="project-member-remove"),
    path("p/<slug:slug>/invite-links/", project_views.invite_link_create, name="invite-link-create"),
    path(
        "p/<slug:slug>/invite-links/<int:link_id>/revoke/", project_views.invite_link_revoke, name="invite-link-revoke"
    ),
    path("join/<str:token>/", project_views.invite_link_join, name="invite-link-join"),
    path("invitations/<int:invitation_id>/accept/", project_views.invitation_accept, name="invitation-accept"),
    path("invitations/<int:invitation_id>/decline/", project_views.invitation_decline, name="invitation-decline"),
    path("p/<slug:slug>/rooms/", views.room_create, name="room-create"),
    path("p/<slug:slug>/dms/", views.dm_create, name="dm-create"),
    path("p/<slug:slug>/r/<slug:room_slug>/", views.room_detail, name="room-detail"),
    path("p/<slug:slug>/r/<slug:room_slug>/members/", views.room_member_add, name="room-member-add"),
    path("p/<slug:slug>/r/<slug:room_slug>/mute/", views.room_mute_toggle, name="room-mute"),
    path("p/<slug:slug>/r/<slug:room_slug>/leave/", views.room_leave, name="room-leave"),
    path("files/<int:upload_id>/thumb", views.file_thumbnail, name="file-thumbnail"),
    path("files/<int:upload_id>/<str:name>", views.file_download, name="file-download"),
]
