from django.urls import path

from bench.loadtest import views

urlpatterns = [
    path("lt/ping/", views.ping),
    path("lt/login/", views.login_view),
    path("lt/read/", views.read),
    path("lt/write/", views.write),
    # The ASGI runs (mix.lua's views prefix).
    path("lt/async/login/", views.alogin_view),
    path("lt/async/read/", views.aread),
    path("lt/async/write/", views.awrite),
]
