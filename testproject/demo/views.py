from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model, login, logout
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from ua_parser import parse as parse_user_agent

from session_ng import api
from session_ng.backends.redis import SessionStore
from session_ng.exceptions import TooManySessions
from session_ng.users import user_pk
from testproject.demo.models import SessionEvent


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


@require_POST
def logout_all_view(request: HttpRequest) -> HttpResponse:
    """Sign out of every account of this browser (every alias's session)."""
    manager = request.session_manager  # type: ignore[attr-defined]
    for alias, key in manager.session_keys().items():
        if alias != manager.current_alias:
            SessionStore().delete(key)
    logout(request)
    manager.users()  # finds the others gone: the response drops them from the cookie
    return redirect(manager.encode_url("/", "0"))


@dataclass(frozen=True)
class ListedSession:
    info: api.SessionInfo
    device: str  # "Chrome on Linux"


def device_name(user_agent: str) -> str:
    """A readable device, from the ua-parser library's rules."""
    if not user_agent:
        return "Unknown device"
    parsed = parse_user_agent(user_agent)
    browser = parsed.user_agent.family if parsed.user_agent else "Unknown browser"
    system = parsed.os.family if parsed.os else None
    browser = browser.removeprefix("Headless")  # HeadlessChrome is Chrome
    return f"{browser} on {system}" if system and system != "Other" else browser


@login_required
def active_sessions(request: HttpRequest) -> HttpResponse:
    sessions = [
        ListedSession(info=info, device=device_name(info.user_agent))
        for info in api.find_sessions(request.user)
    ]
    return render(
        request,
        "demo/sessions.html",
        {"sessions": sessions, "current": request.session.session_key},
    )


@login_required
@require_POST
def end_session(request: HttpRequest, public_id: str) -> HttpResponse:
    # Sessions are named by public_id, never by key (keys are credentials and
    # URLs end up in logs); and only one of this user's own can be ended.
    mine = {info.public_id: info.session_key for info in api.find_sessions(request.user)}
    if public_id not in mine:
        raise Http404("No such session.")
    SessionStore().delete(mine[public_id])
    return redirect(request.session_manager.encode_url("/sessions/"))  # type: ignore[attr-defined]


@login_required
@require_POST
def end_other_sessions(request: HttpRequest) -> HttpResponse:
    api.delete_sessions(request.user, exclude=request.session.session_key)
    return redirect(request.session_manager.encode_url("/sessions/"))  # type: ignore[attr-defined]


def event_log(request: HttpRequest) -> HttpResponse:
    events = list(SessionEvent.objects.all()[:50])
    model = get_user_model()
    ids = {pk for e in events if (pk := user_pk(model, e.user_id or None)) is not None}
    names = {str(pk): u.get_username() for pk, u in model._default_manager.in_bulk(ids).items()}
    for e in events:
        e.username = names.get(e.user_id, f"user {e.user_id}" if e.user_id else "")  # type: ignore[attr-defined]
    return render(request, "demo/events.html", {"events": events})


@login_required
def chat(request: HttpRequest) -> HttpResponse:
    # A short idle timeout, so the demo shows both sides: chatting keeps the
    # user signed in (each message refreshes the session), silence signs them
    # out and the worker's expiry closes the socket.
    idle = int(settings.DEMO_CHAT_IDLE_SECONDS)
    request.session.set_expiry(idle)
    return render(request, "demo/chat.html", {"idle": idle})


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The site's 400 page. Only session_ng's own refusal is explained (its
    message is ours); other errors' messages may quote the request."""
    reason = str(exception) if isinstance(exception, TooManySessions) else ""
    return render(request, "demo/400.html", {"reason": reason}, status=400)
