from django.urls import path

from loadtest import views

urlpatterns = [
    path("lt/ping/", views.ping),
    path("lt/login/", views.login_view),
    path("lt/read/", views.read),
    path("lt/write/", views.write),
]
