"""The demo chat page in headless Chromium, through nginx, across an instance crash.

Two pages (alice and bob) chat in a room through nginx in front of two
instances. The instance serving alice is frozen (SIGSTOP), so whatever is
published meanwhile certainly never reaches her through it, then killed
(SIGKILL). Her page must show that it is reconnecting, then that it resumed
the missed messages, and end with exactly the room's history: every message
once, in order, none lost. A quiet room (nothing in it before the crash)
must resume from the position the server reported at join time. Finally a
reload resumes from localStorage the same way.

Everything is read from the page (the DOM) and compared with the history
that the HTTP API returns; waits poll with a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.timeouts import scaled

from .conftest import Deployment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO_ROOT / "var" / "screenshots" / "chat.png"

# Records every text that the connection pill and the banner show, so that a
# state held only for a moment ("reconnecting…") is still observed.
RECORDER = """
window.__seen = [];
const watch = (id) => {
  const node = document.getElementById(id);
  const note = () => {
    const text = node.hidden ? '' : node.textContent;
    const seen = window.__seen;
    if (!seen.length || seen[seen.length - 1] !== id + ':' + text) seen.push(id + ':' + text);
  };
  note();
  new MutationObserver(note).observe(node, { childList: true, characterData: true, subtree: true, attributes: true });
};
watch('conn');
watch('banner');
"""

MESSAGES = """
return Array.from(document.querySelectorAll('#messages li.msg'), (li) => ({
  id: li.dataset.id || null,
  body: li.querySelector('.body').textContent,
  replayed: li.classList.contains('replayed'),
}));
"""


class ChatPage:
    """One browser tab on the demo page, operated like a user would."""

    def __init__(self, driver: Any, base_url: str) -> None:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.base_url = base_url
        self.By = By
        self._wait = WebDriverWait
        self._stale = StaleElementReferenceException
        self.user = ""

    def wait(self, predicate: Callable[[Any], Any], timeout: float, what: str) -> Any:
        # The page re-renders lists wholesale: an element found a moment ago
        # may be gone; that only means "look again".
        return self._wait(self.driver, scaled(timeout), poll_frequency=0.05,
                          ignored_exceptions=[self._stale]).until(
            predicate, message=f"{self.user or 'page'}: timed out waiting for {what}"
        )

    def find(self, css: str) -> Any:
        return self.driver.find_element(self.By.CSS_SELECTOR, css)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    # -- actions ---------------------------------------------------------------

    def open(self, user: str) -> None:
        self.user = user
        self.driver.get(self.base_url + "/")
        field = self.wait(lambda d: self.find("#name"), 10, "the name field")
        field.clear()
        field.send_keys(user)
        self.find("#name-form button[type=submit]").click()
        self.wait_online()

    def load(self) -> None:
        """Open the page again (a reload: same profile, same localStorage)."""
        self.driver.get(self.base_url + "/")
        self.wait_online()

    def wait_online(self, timeout: float = 15) -> None:
        self.wait(lambda d: "online" in self.find("#conn").get_attribute("class").split(), timeout,
                  "the connection to be open")

    def join(self, room: str) -> None:
        field = self.find("#join-room")
        field.clear()
        field.send_keys(room)
        self.find("#join-form button[type=submit]").click()
        self.wait_joined(room)

    def room_button(self, room: str) -> Any:
        for b in self.driver.find_elements(self.By.CSS_SELECTOR, "#rooms button.room"):
            if b.get_attribute("data-room") == room:
                return b
        return None

    def wait_joined(self, room: str, timeout: float = 15) -> None:
        def joined(_d: Any) -> bool:
            b = self.room_button(room)
            return b is not None and "joining" not in b.get_attribute("class").split()
        self.wait(joined, timeout, f"room {room} to be joined")

    def show(self, room: str) -> None:
        def clicked(_d: Any) -> bool:
            b = self.room_button(room)
            if b is None:
                return False
            b.click()
            return True
        self.wait(clicked, 5, f"room {room} in the room list")
        self.wait(lambda d: self.find("#room-title").text == "#" + room, 5, f"room {room} to be shown")

    def send(self, text: str) -> None:
        field = self.find("#text")
        field.clear()
        field.send_keys(text)
        self.find("#composer button[type=submit]").click()
        self.wait(lambda d: self.find("#text").get_attribute("value") == "", 5, "the composer to clear")

    # -- observations ------------------------------------------------------------

    def messages(self) -> list[dict[str, Any]]:
        return self.js(MESSAGES)

    def ids(self) -> list[str | None]:
        return [m["id"] for m in self.messages()]

    def instance(self) -> str:
        return self.find("#conn").get_attribute("data-instance") or ""

    def record(self) -> None:
        self.js(RECORDER)

    def seen(self) -> list[str]:
        return self.js("return window.__seen || [];")

    def js_errors(self) -> list[str]:
        """Uncaught exceptions and failed assertions logged by the page's scripts."""
        entries = self.driver.get_log("browser")
        return [e["message"] for e in entries
                if e.get("level") == "SEVERE" and "Uncaught" in e.get("message", "")]


# -- HTTP (through nginx) -----------------------------------------------------------


def post(http: httpx.Client, room: str, body: Any, user: str = "carol") -> str:
    r = http.post(f"/rooms/{quote(room, safe='')}/messages", params={"user": user},
                  json={"body": body, "client_id": uuid.uuid4().hex})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def history(http: httpx.Client, room: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = "0"
    for _page in range(100):
        r = http.get(f"/rooms/{quote(room, safe='')}/messages",
                     params={"user": "observer", "after": after, "limit": 1000})
        assert r.status_code == 200, r.text
        data = r.json()
        out.extend(data["messages"])
        if data["next"] is None:
            return out
        after = data["next"]
    raise AssertionError("history did not end within 100 pages")


def assert_exactly(page: ChatPage, hist: list[dict[str, Any]], what: str) -> list[dict[str, Any]]:
    shown = page.messages()
    ids = [m["id"] for m in shown]
    assert len(ids) == len(set(ids)), f"{page.user} shows a message twice in {what}: {ids}"
    assert ids == [h["id"] for h in hist], f"{page.user}: {what} differs from the history"
    assert [m["body"] for m in shown] == [h["body"] for h in hist]
    return shown


def shows_history(page: ChatPage, http: httpx.Client, room: str) -> bool:
    return page.ids() == [h["id"] for h in history(http, room)]


def save_screenshot(page: ChatPage, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    assert page.driver.save_screenshot(str(shot)), "screenshot failed"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT.with_name(name))
    return shot


# -- the scenario -------------------------------------------------------------------


def steer(page: ChatPage, http: httpx.Client, want: Callable[[str], bool], what: str, tries: int = 20) -> None:
    """Reload `page` until nginx's round robin put its socket where wanted.

    A page load makes about the same number of requests every time, so after
    a miss one extra request through nginx shifts the rotation.
    """
    for _ in range(tries):
        if want(page.instance()):
            return
        assert http.get("/healthz").status_code == 200
        page.load()
    raise AssertionError(f"{page.user}: not connected to {what} after {tries} reloads")


@pytest.mark.parametrize("bob_on", ["survivor", "victim"])
def test_pages_resume_exactly_after_an_instance_dies(
    chrome: Callable[[str], Any], deployment: Deployment, tmp_path: Path, bob_on: str
) -> None:
    """bob_on: whether bob's socket is on the instance that dies too (then his
    own message, sent into the frozen instance, must be resent and stored once)."""
    suffix = uuid.uuid4().hex[:8]
    room, quiet = f"lobby-{suffix}", f"quiet-{suffix}"
    http = httpx.Client(base_url=deployment.url, timeout=scaled(10))
    alice = ChatPage(chrome("alice"), deployment.url)
    bob = ChatPage(chrome("bob"), deployment.url)
    try:
        alice.open(f"alice-{suffix}")
        bob.open(f"bob-{suffix}")
        if bob_on == "victim":
            steer(bob, http, lambda inst: inst == alice.instance(), "alice's instance")
        else:
            steer(bob, http, lambda inst: inst != alice.instance(), "the other instance")
        alice.join(quiet)
        alice.join(room)
        bob.join(room)

        # A conversation, including content that must stay text.
        alice.send("hello from alice")
        bob.send("hi alice <img src=x onerror=window.__pwned=1> & <b>bold</b>")
        for page in (alice, bob):
            page.wait(lambda d, p=page: shows_history(p, http, room) and len(p.ids()) == 2, 10,
                      "the first two messages")
        assert alice.js("return document.querySelectorAll('#messages img, #messages b').length") == 0
        assert alice.js("return window.__pwned === undefined")

        # Freeze alice's instance: nothing published from now on can reach her through it.
        victim = deployment.by_id(alice.instance())
        survivor = deployment.b if victim is deployment.a else deployment.a
        bob_affected = bob.instance() == victim.instance_id
        assert bob_affected == (bob_on == "victim")
        for page in (alice, bob):
            page.record()
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            # Straight to the survivor: nginx could hand a request to the frozen
            # instance, whose kernel still accepts connections.
            with httpx.Client(base_url=survivor.url, timeout=scaled(10)) as direct:
                missed = [post(direct, room, f"missed {i}") for i in range(3)]
                missed_quiet = post(direct, quiet, "said in the quiet room")
            bob.send("bob while alice is away")   # pending until bob reconnects, if he was on the victim
        finally:
            victim.kill()   # SIGKILL; works on a stopped process
        # Messages keep coming while the pages reconnect.
        during = [post(http, room, f"during reconnect {i}") for i in range(2)]

        # Alice shows the outage, then the resume, then exactly the history.
        alice.wait(lambda d: any(s.startswith("banner:Resumed") for s in alice.seen()), 30,
                   "the resumed banner")
        alice.wait_online()
        alice.wait(lambda d: shows_history(alice, http, room), 15, "every message of the room")
        if bob_affected:
            bob.wait(lambda d: any(s.startswith("banner:Resumed") for s in bob.seen()), 30, "bob's resume")
            assert any(s.startswith("conn:reconnecting") for s in bob.seen()), bob.seen()
        bob.wait(lambda d: shows_history(bob, http, room), 15, "every message of the room (bob)")
        assert alice.instance() == survivor.instance_id

        seen = alice.seen()
        reconnecting = next(i for i, s in enumerate(seen) if s.startswith("conn:reconnecting"))
        resumed = next(i for i, s in enumerate(seen) if s.startswith("banner:Resumed"))
        assert reconnecting < resumed, seen
        assert any(s == "banner:Connection lost · reconnecting…" for s in seen[:resumed]), seen

        hist = history(http, room)
        shown = assert_exactly(alice, hist, room)
        assert set(missed) <= {m["id"] for m in shown}
        assert set(during) <= {h["id"] for h in hist}
        bodies = [h["body"] for h in hist]
        assert bodies.count("bob while alice is away") == 1, "bob's publish was stored twice"
        replayed_here = [m["id"] for m in shown if m["replayed"]]
        # Everything alice missed while frozen out was delivered as a replay.
        assert set(missed) <= set(replayed_here), (missed, replayed_here)
        n_resumed = int(seen[resumed].split()[1])
        assert_exactly(bob, hist, f"{room} (bob)")

        # The quiet room resumed from its join position (no message had been seen there).
        if bob_on == "survivor":
            save_screenshot(alice, tmp_path, "chat.png")
            save_screenshot(bob, tmp_path, "chat-bob.png")
        alice.show(quiet)
        alice.wait(lambda d: shows_history(alice, http, quiet), 10, "the quiet room's message")
        quiet_shown = assert_exactly(alice, history(http, quiet), quiet)
        assert [m["id"] for m in quiet_shown] == [missed_quiet]
        assert quiet_shown[0]["replayed"]
        # The banner's count is the replays of all rooms: this room's and the quiet one's.
        assert n_resumed == len(replayed_here) + 1, (seen[resumed], replayed_here)

        # A reload resumes from localStorage: cached lines plus exactly what came meanwhile.
        alice.show(room)
        alice.driver.get("about:blank")
        while_away = [post(http, room, f"while reloading {i}") for i in range(2)]
        alice.load()
        alice.wait_joined(room)
        alice.wait(lambda d: shows_history(alice, http, room), 15, "the messages sent during the reload")
        shown = assert_exactly(alice, history(http, room), f"{room} after a reload")
        assert [m["id"] for m in shown[-2:]] == while_away
        assert all(m["replayed"] for m in shown[-2:])
        alice.wait(lambda d: alice.find("#banner").text == "Resumed 2 missed messages", 5, "the reload banner")

        for page in (alice, bob):
            assert page.js_errors() == [], f"{page.user}: script errors"
    finally:
        http.close()


def test_direct_messages_members_and_presence(chrome: Callable[[str], Any], deployment: Deployment) -> None:
    """The rest of the page: /dm, the inbox, who is online, room members, leaving."""
    suffix = uuid.uuid4().hex[:8]
    room = f"lobby-{suffix}"
    a_name, b_name = f"alice-{suffix}", f"bob-{suffix}"
    alice = ChatPage(chrome("alice"), deployment.url)
    bob = ChatPage(chrome("bob"), deployment.url)
    alice.open(a_name)
    bob.open(b_name)

    def names(page: ChatPage, list_id: str) -> list[str]:
        return page.js(f"return Array.from(document.querySelectorAll('#{list_id} button.person'),"
                       " (b) => b.textContent);")

    alice.wait(lambda d: b_name in names(alice, "users"), 15, "bob in the online list")

    # A direct message: in bob's inbox as received, in alice's as sent.
    alice.send(f"/dm {b_name} psst <script>window.__pwned=1</script>")
    bob.wait(lambda d: [m["body"] for m in bob.messages()] == ["psst <script>window.__pwned=1</script>"],
             10, "the direct message in bob's inbox")
    assert bob.js("return window.__pwned === undefined")
    sent = alice.wait(lambda d: alice.js(
        "return Array.from(document.querySelectorAll('#messages li.msg.mine .from'), (e) => e.textContent);"),
        10, "the sent direct message in alice's inbox")
    assert sent == [f"→ {b_name}"]

    # Members of a room both joined.
    alice.join(room)
    bob.join(room)
    alice.show(room)   # polls the members list again
    alice.wait(lambda d: sorted(names(alice, "members")) == sorted([f"{a_name} (you)", b_name]), 15,
               "both members listed")

    # Leaving removes the room from the page.
    alice.send("/leave")
    alice.wait(lambda d: alice.room_button(room) is None, 5, "the room to leave the list")
    assert alice.find("#room-title").text == f"@{a_name} (inbox)"
    for page in (alice, bob):
        assert page.js_errors() == [], f"{page.user}: script errors"


def test_bodies_the_examples_send_read_as_chat_text(chrome: Callable[[str], Any], deployment: Deployment) -> None:
    """{"text": ...} (the README's Python and browser examples) shows its text;
    other values get a readable line, with the exact JSON as the tooltip."""
    suffix = uuid.uuid4().hex[:8]
    room = f"bodies-{suffix}"
    page = ChatPage(chrome("alice"), deployment.url)
    page.open(f"alice-{suffix}")
    page.join(room)
    page.show(room)
    bodies: list[Any] = ["plain", {"text": "hello"}, {"n": 1, "tags": ["a", "b"]}, [1, "two"], 0, None]
    http = httpx.Client(base_url=deployment.url, timeout=scaled(10))
    try:
        for body in bodies:
            post(http, room, body)
    finally:
        http.close()
    shown = ["plain", "hello", "n: 1, tags: [a, b]", "1, two", "0", "(empty)"]
    page.wait(lambda d: [m["body"] for m in page.messages()] == shown, 10, "the rendered bodies")
    titles = page.js("return Array.from(document.querySelectorAll('#messages li.msg .body'),"
                     " (e) => e.title);")
    assert titles == ["", '{"text":"hello"}', '{"n":1,"tags":["a","b"]}', '[1,"two"]', "0", "null"]
    assert page.js_errors() == []
