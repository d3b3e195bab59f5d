from __future__ import annotations

from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST


def home(request: HttpRequest) -> HttpResponse:
    visits = int(request.session.get("visits", 0)) + 1
    request.session["visits"] = visits
    return render(request, "demo/home.html", {"visits": visits})


def login_view(request: HttpRequest) -> HttpResponse:
    error = ""
    if request.method == "POST":
        user = authenticate(
            request,
            username=request.POST.get("username", ""),
            password=request.POST.get("password", ""),
        )
        if user is not None:
            login(request, user)
            return redirect("home")
        error = "Wrong username or password."
    return render(request, "demo/login.html", {"error": error})


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("home")


@require_POST
def api_login(request: HttpRequest) -> JsonResponse:
    """Log in for a client that keeps its session id in the X-Auth-Token header.

    The client sends the header on this first request too (empty, or any
    placeholder): that is what exempts it from CSRF (no cross-site form can
    send a header) and what asks for the new id in the response.
    """
    user = authenticate(
        request,
        username=request.POST.get("username", ""),
        password=request.POST.get("password", ""),
    )
    if user is None:
        return JsonResponse({"error": "wrong username or password"}, status=403)
    login(request, user)
    return JsonResponse({"user": user.get_username()})


@require_POST
def api_logout(request: HttpRequest) -> JsonResponse:
    logout(request)
    return JsonResponse({"user": None})


def session_json(request: HttpRequest) -> JsonResponse:
    """What the session holds (for the tests and for curl)."""
    if request.method == "POST":
        for name, value in request.POST.items():
            if name != "csrfmiddlewaretoken":
                request.session[name] = value
    return JsonResponse(
        {
            "user": request.user.get_username() if request.user.is_authenticated else None,
            "session": {k: v for k, v in request.session.items() if not k.startswith("_")},
        }
    )
