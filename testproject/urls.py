from django.contrib import admin
from django.urls import path

from testproject.demo import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("logout/all/", views.logout_all_view, name="logout-all"),
    path("api/session/", views.session_json, name="session-json"),
    path("api/login/", views.api_login, name="api-login"),
    path("api/logout/", views.api_logout, name="api-logout"),
    path("sessions/", views.active_sessions, name="sessions"),
    path("sessions/<str:public_id>/end/", views.end_session, name="end-session"),
    path("sessions/end-others/", views.end_other_sessions, name="end-other-sessions"),
    path("events/", views.event_log, name="events"),
    path("chat/", views.chat, name="chat"),
    path("admin/", admin.site.urls),
]

# A refused sign-in (too many accounts in this browser) is a BadRequest:
# Django renders it with this view, which says what to do next.
handler400 = "testproject.demo.views.bad_request"
