from django.urls import path

from testproject.demo import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("api/session/", views.session_json, name="session-json"),
    path("api/login/", views.api_login, name="api-login"),
    path("api/logout/", views.api_logout, name="api-logout"),
]
