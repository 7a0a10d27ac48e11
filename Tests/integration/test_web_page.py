"""The web chat page (served at `/` by the WebSocket listener), driven by headless Chromium.

Two browser sessions (alice, bob) and a line-protocol client (carol) chat in one room: sending
from the page, receiving from line, the via badges, the typing indicator, the occupants list, and
a dropped WebSocket that resumes with `join … since` without losing or doubling a message.
A second test covers direct messages, error toasts and loading older history.

Needs Debian's chromium + chromium-driver (`make test-deps` installs them) and selenium (in
requirements.txt). A screenshot of the page goes to .build/screenshots/web-page.png.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import swb

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

_missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not (p.is_file() and os.access(p, os.X_OK))]
if _missing:
    pytest.skip(f"browser test needs {' and '.join(_missing)} (Debian packages chromium and "
                f"chromium-driver; `make test-deps` installs them)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT = 10.0
SCREENSHOTS = swb.REPO / ".build" / "screenshots"

# Everything the page shows in #messages, read in one go (no stale elements).
JS_MESSAGES = """
return Array.from(document.querySelectorAll('#messages > li')).map(li => ({
  cls: li.className,
  seq: li.dataset.seq ? Number(li.dataset.seq) : null,
  id: li.dataset.id || null,
  kind: li.dataset.kind || null,
  pending: li.classList.contains('pending'),
  sender: li.querySelector('.sender') ? li.querySelector('.sender').textContent : null,
  via: li.querySelector('.via-badge') ? li.querySelector('.via-badge').textContent : null,
  body: li.querySelector('.body') ? li.querySelector('.body').textContent : null,
  text: li.textContent,
}));
"""

JS_OCCUPANTS = """
return Array.from(document.querySelectorAll('#occupants li[data-user]'))
  .map(li => [li.dataset.user, li.dataset.via]);
"""


class Page:
    """One browser session on the chat page."""

    def __init__(self, driver, name: str, base_url: str):
        self.d = driver
        self.name = name
        self.base_url = base_url

    # waiting -----------------------------------------------------------------------------

    def wait(self, cond, what: str, timeout: float = WAIT):
        """Polls `cond()` until it is truthy; fails with the page's state when it never is."""
        try:
            return WebDriverWait(self.d, timeout, poll_frequency=0.1,
                                 ignored_exceptions=(WebDriverException,)).until(lambda _d: cond())
        except TimeoutException:
            raise AssertionError(f"{self.name}: timed out after {timeout}s waiting for {what}\n"
                                 f"{self.describe()}") from None

    def describe(self) -> str:
        try:
            return (f"  status={self.status()!r} title={self.js('return document.title')!r}\n"
                    f"  occupants={self.occupants()!r} typing={self.typing()!r}\n"
                    f"  toasts={self.toasts()!r}\n"
                    f"  messages={[(m['seq'], m['kind'], m['sender'], m['body'] or m['text']) for m in self.messages()]!r}")
        except WebDriverException as e:  # the page itself is gone
            return f"  (page state unavailable: {e.msg})"

    # reading -----------------------------------------------------------------------------

    def js(self, script: str, *args):
        return self.d.execute_script(script, *args)

    def css(self, selector: str):
        return self.d.find_element(By.CSS_SELECTOR, selector)

    def status(self) -> str:
        return self.js("const s = document.querySelector('#status'); return s ? s.textContent.trim() : null;")

    def messages(self) -> list[dict]:
        return self.js(JS_MESSAGES)

    def chat(self) -> list[dict]:
        return [m for m in self.messages() if "message" in m["cls"].split()]

    def occupants(self) -> set[tuple[str, str]]:
        return {tuple(x) for x in self.js(JS_OCCUPANTS)}

    def typing(self) -> str:
        return self.js("return document.querySelector('#typing').textContent")

    def toasts(self) -> list[str]:
        return self.js("return Array.from(document.querySelectorAll('#toasts .toast')).map(t => t.textContent)")

    def confirmed(self, body: str) -> list[dict]:
        """The acknowledged / received chat messages with this body."""
        return [m for m in self.chat() if m["body"] == body and m["seq"] is not None and not m["pending"]]

    # acting ------------------------------------------------------------------------------

    def login(self, user: str, password: str) -> None:
        self.d.get(self.base_url + "/")
        self.wait(lambda: self.css("#login-user").is_displayed(), "the login form")
        self.css("#login-user").send_keys(user)
        self.css("#login-password").send_keys(password)
        self.css("#login-submit").click()
        self.wait(lambda: self.status() == "connected", f"{user} to be logged in and connected")
        assert not self.css("#login-user").is_displayed()

    def open_room(self, room: str) -> None:
        """Clicks the room in the sidebar (joining it) and waits until this user is in it."""
        sel = f'#room-list li[data-room="{room}"] button.nav-link'
        self.wait(lambda: self.d.find_elements(By.CSS_SELECTOR, sel), f"room {room} in the sidebar")
        self.css(sel).click()
        self.wait_joined(room)

    def create_room(self, room: str) -> None:
        self.css("#new-room-name").send_keys(room)
        self.css("#new-room-submit").click()
        self.wait_joined(room)

    def wait_joined(self, room: str) -> None:
        self.wait(lambda: self.d.find_elements(By.CSS_SELECTOR, f'#room-list li[data-room="{room}"][data-joined="true"]')
                  and self.css("#room-title").text == f"#{room}"
                  and (self.name, "ws") in self.occupants(),
                  f"{room} to be joined and shown (with {self.name}/ws among its occupants)")

    def composer(self):
        return self.css("#composer textarea")

    def type(self, text: str) -> None:
        self.composer().send_keys(text)

    def send(self, text: str) -> None:
        """Types `text` (a \\n becomes Shift+Enter) and presses Enter."""
        box = self.composer()
        for i, part in enumerate(text.split("\n")):
            if i:
                ActionChains(self.d).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
            box.send_keys(part)
        box.send_keys(Keys.ENTER)

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        self.d.save_screenshot(str(path))
        return path


@pytest.fixture
def browser(request):
    """browser(server, name) -> a Page in its own headless Chromium; all quit after the test."""
    pages: list[Page] = []

    def make(server, name: str) -> Page:
        opts = Options()
        opts.binary_location = str(CHROMIUM)
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                    "--disable-gpu", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-background-networking", "--disable-background-timer-throttling",
                    "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
        driver.set_window_size(1280, 900)
        page = Page(driver, name, server.http_url)
        pages.append(page)
        return page

    yield make

    failed = any(getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
                 for w in ("setup", "call"))
    for page in pages:
        try:
            if failed:
                try:
                    print(f"\n===== browser {page.name}: screenshot {page.screenshot(f'failed-{request.node.name}-{page.name}.png')}")
                    print(page.describe())
                    for entry in page.d.get_log("browser"):
                        print(f"  console {entry.get('level')}: {entry.get('message')}")
                except WebDriverException as e:
                    print(f"(could not collect the state of {page.name}: {e.msg})")
        finally:
            page.d.quit()


def assert_in_order(page: Page, must_include: list[int] = ()) -> list[int]:
    """Every seq shown once, strictly increasing; ids unique. Returns the seqs."""
    items = [m for m in page.messages() if m["seq"] is not None]
    seqs = [m["seq"] for m in items]
    ids = [m["id"] for m in items]
    assert all(a < b for a, b in zip(seqs, seqs[1:])), f"{page.name}: seqs not strictly increasing: {seqs}"
    assert len(set(ids)) == len(ids), f"{page.name}: duplicate envelope ids: {ids}"
    for s in must_include:
        assert s in seqs, f"{page.name}: seq {s} missing from {seqs}"
    return seqs


def test_web_chat(server, browser):
    assert server.ws_enabled
    alice = browser(server, "alice")
    bob = browser(server, "bob")

    # alice logs in and creates the room; bob logs in and clicks it in the sidebar.
    alice.login("alice", swb.USERS["alice"])
    alice.create_room("lobby")
    bob.login("bob", swb.USERS["bob"])
    bob.open_room("lobby")

    carol = server.client("carol")
    carol.join("lobby")

    # Occupants on alice's page: from the occupants frame, then the join envelopes.
    alice.wait(lambda: {("alice", "ws"), ("bob", "ws"), ("carol", "line")} <= alice.occupants(),
               "occupants alice/ws, bob/ws and carol/line")
    alice.wait(lambda: any(m["kind"] == "join" and "carol joined via line" in m["text"] for m in alice.messages()),
               "the grey 'carol joined via line' line")

    # alice sends from the page: pending, then confirmed by the ack; bob's page and carol get it.
    text = "hello from the web page"
    alice.send(text)
    alice.wait(lambda: len(alice.confirmed(text)) == 1, "alice's own message to be acknowledged")
    m = re.fullmatch(rf"MSG lobby (\d+) \d+ alice ws {re.escape(text)}",
                     carol.expect(re.compile(rf"^MSG lobby \d+ \d+ alice ")))
    assert m, f"carol got {carol.history[-1]!r}"
    seq = int(m.group(1))
    assert alice.confirmed(text)[0]["seq"] == seq
    bob.wait(lambda: len(bob.confirmed(text)) == 1, "alice's message on bob's page")
    shown = bob.confirmed(text)[0]
    assert (shown["seq"], shown["sender"], shown["via"]) == (seq, "alice", "ws")

    # Shift+Enter is a line break, Enter sends.
    alice.send("line one\nline two")
    carol.expect(re.compile(r"^MSG lobby \d+ \d+ alice ws line one\\nline two$"))
    bob.wait(lambda: len(bob.confirmed("line one\nline two")) == 1, "the two-line message on bob's page")

    # carol (line) talks: both pages show it with the line badge.
    carol.say("lobby", "hi from line")
    for page in (alice, bob):
        page.wait(lambda p=page: any(x["sender"] == "carol" and x["via"] == "line" for x in p.confirmed("hi from line")),
                  "carol's line message with a 'line' badge")

    # User data is text, never markup.
    nasty = '<img src=x onerror="window.pwned=1"><b>bold?</b> & done'
    carol.say("lobby", nasty)
    bob.wait(lambda: len(bob.confirmed(nasty)) == 1, "the message with markup, shown literally")
    assert bob.js("return document.querySelectorAll('#messages img, #messages .body b').length") == 0
    assert bob.js("return window.pwned === undefined")

    # bob types: alice sees the indicator (and no message for the typing envelope).
    bob.type("I am typing")
    alice.wait(lambda: "bob is typing" in alice.typing(), "'bob is typing…' on alice's page")
    assert all(m["seq"] != 0 for m in alice.messages())
    bob.composer().clear()

    # bob's socket drops; carol says three things meanwhile; bob's page resumes and shows each once.
    assert bob.js("return window.switchboard.debugDropConnection(true)") is True
    bob.wait(lambda: bob.status() == "reconnecting", "status 'reconnecting'")
    carol.expect("PARTED lobby bob ws")
    missed = [f"missed {i}" for i in (1, 2, 3)]
    missed_seqs = [carol.say("lobby", t) for t in missed]
    bob.js("window.switchboard.debugReconnect()")
    bob.wait(lambda: bob.status() == "connected", "status 'connected' again")
    bob.wait(lambda: all(len(bob.confirmed(t)) == 1 for t in missed), "the three missed messages on bob's page")
    seqs = assert_in_order(bob, missed_seqs)
    assert seqs.index(missed_seqs[0]) < seqs.index(missed_seqs[1]) < seqs.index(missed_seqs[2])
    for t in missed + [text, "hi from line"]:
        assert len([m for m in bob.chat() if m["body"] == t]) == 1, f"{t!r} not shown exactly once on bob's page"

    # A drop with the automatic reconnect (backoff) — the next message arrives exactly once.
    assert bob.js("return window.switchboard.debugDropConnection()") is True
    after = carol.say("lobby", "after the automatic reconnect")
    bob.wait(lambda: len(bob.confirmed("after the automatic reconnect")) == 1, "the message after the automatic reconnect")
    bob.wait(lambda: bob.status() == "connected", "status 'connected' after the automatic reconnect")
    assert_in_order(bob, missed_seqs + [after])

    # alice saw everything live, once, in order.
    alice.wait(lambda: all(len(alice.confirmed(t)) == 1 for t in missed), "the three messages on alice's page")
    assert_in_order(alice, [seq] + missed_seqs + [after])

    # A reload stays logged in, re-joins the room and shows its history.
    bob.d.refresh()
    bob.wait(lambda: bob.status() == "connected", "connected after a reload (no login)")
    bob.wait_joined("lobby")
    bob.wait(lambda: len(bob.confirmed("hi from line")) == 1 and len(bob.confirmed(missed[2])) == 1,
             "history after the reload")
    assert_in_order(bob, missed_seqs)

    alice.wait(lambda: not alice.typing(), "the typing indicator to go away")
    path = alice.screenshot("web-page.png")
    assert path.stat().st_size > 0

    # Log out: back to the login form, and a reload does not log in again.
    bob.css("#logout-button").click()
    bob.wait(lambda: bob.css("#login-user").is_displayed(), "the login form after logging out")
    bob.d.refresh()
    bob.wait(lambda: bob.css("#login-user").is_displayed(), "the login form after logging out and reloading")
    carol.close()


def test_direct_messages_errors_and_older_history(server, browser):
    carol = server.client("carol")
    bob = server.client("bob")
    alice = browser(server, "alice")
    alice.login("alice", swb.USERS["alice"])

    # carol (line) writes to alice: a conversation appears under "Direct", with an unread count.
    carol.tell("alice", "psst, alice")
    dm = '#dm-list li[data-room="dm.alice.carol"]'
    alice.wait(lambda: alice.d.find_elements(By.CSS_SELECTOR, dm), "the dm.alice.carol conversation in the sidebar")
    alice.wait(lambda: alice.css(dm).get_attribute("data-user") == "carol"
               and alice.d.find_elements(By.CSS_SELECTOR, dm + " .unread-badge"), "an unread badge on it")
    alice.css(dm + " button.nav-link").click()
    alice.wait(lambda: any(m["via"] == "line" and m["sender"] == "carol" for m in alice.confirmed("psst, alice")),
               "carol's direct message")
    assert not alice.d.find_elements(By.CSS_SELECTOR, dm + " .unread-badge")
    alice.send("hi carol")
    carol.expect(re.compile(r"^MSG dm\.alice\.carol \d+ \d+ alice ws hi carol$"))
    alice.wait(lambda: len(alice.confirmed("hi carol")) == 1, "the acknowledged reply")

    # "Message a user": alice starts a conversation with bob.
    alice.css("#dm-user").send_keys("bob")
    alice.css("#dm-submit").click()
    alice.wait(lambda: alice.css("#room-title").text == "@bob", "the conversation with bob")
    alice.send("hey bob")
    bob.expect(re.compile(r"^MSG dm\.alice\.bob \d+ \d+ alice ws hey bob$"))
    alice.wait(lambda: len(alice.confirmed("hey bob")) == 1, "the acknowledged direct message")

    # A server error is a dismissable toast (and the message is marked as not sent).
    alice.css("#dm-user").send_keys("zed")
    alice.css("#dm-submit").click()
    alice.wait(lambda: alice.css("#room-title").text == "@zed", "the conversation with zed")
    alice.send("anyone?")
    alice.wait(lambda: any("no_such_user" in t.replace(" ", "_") or "zed" in t for t in alice.toasts()),
               "an error toast for the unknown user")
    alice.wait(lambda: alice.d.find_elements(By.CSS_SELECTOR, "#messages li.pending.failed"), "the failed message")
    toasts = len(alice.toasts())
    alice.css("#toasts .toast .toast-close").click()
    alice.wait(lambda: len(alice.toasts()) == toasts - 1, "the toast to be dismissed")

    # Older history: 70 messages from carol; the page shows the newest page, "Load older" the rest.
    carol.join("big")
    sent = [carol.say("big", f"m-{i}") for i in range(1, 71)]
    alice.create_room("big")
    alice.wait(lambda: len(alice.confirmed("m-70")) == 1, "the newest messages of 'big'")
    assert not alice.confirmed("m-1"), "the first page should not reach back to the first message"
    alice.wait(lambda: alice.css("#load-older").is_displayed(), "the 'Load older' button")
    # (clicked by script: a WebDriver click scrolls the list to the top first, which loads older
    # messages by itself and moves the button away under the pointer)
    alice.js("document.querySelector('#load-older').click()")
    alice.wait(lambda: len(alice.confirmed("m-1")) == 1, "the oldest messages after 'Load older'")
    alice.wait(lambda: all(len(alice.confirmed(f"m-{i}")) == 1 for i in range(1, 71)), "all 70 messages")
    seqs = assert_in_order(alice, sent)
    assert seqs[0] == 1
    carol.close()
    bob.close()
