"""``megatrio dlq list|show|retry|purge`` against a real JetStream (a private ``nats-server -js``):
dead letters made by a served app, inspected, retried and purged from another process."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest

from ..servers import NatsServer, free_port
from .cli_support import Process, Server

EMBEDDED = (
    "megatrio: error: app 'jobsapp' has no nats_url: its jobs run on the embedded engine, "
    "whose dead letters live in the serving process's memory and cannot be inspected from "
    "another process (set nats_url to keep them in JetStream)"
)


def dlq(url: str, *args: str) -> Process:
    """``megatrio dlq ACTION jobs_app:app ...`` on the NATS at *url*, run to its end."""
    action, *rest = args
    proc = Process(["dlq", action, "jobs_app:app", *rest], env={"MEGATRIO_NATS_URL": url})
    proc.finish()
    return proc


def poison_dead_letters(nats: NatsServer, *ids: str) -> None:
    """Serve jobs_app until the poison job of each id (or of none, just retried ones: then
    one) reached the DLQ, then stop it."""
    server = Server("jobs_app:app", "--grace-seconds", "5", env={"MEGATRIO_NATS_URL": nats.url})
    try:
        for job_id in ids:
            server.get(f"/enqueue/poison?id={job_id}")
        expected = max(len(ids), 1)
        server.wait_for(
            lambda: dead_lettered(server) >= expected, timeout=20, what=f"{expected} dead letters"
        )
        server.signal(signal.SIGTERM)
        assert server.finish() == 0
    finally:
        server.kill()


def dead_lettered(server: Server) -> int:
    """The poison consumer's count of dead letters stored (counted once the DLQ has it)."""
    tree = json.loads(server.get("/_megatrio/tree", base=server.admin)[1])
    [jobs] = [c for c in tree["children"] if c["name"] == "jobs"]
    [poison] = [c for c in jobs["supervisor"]["children"] if c["name"] == "poison"]
    # A consumer that has annotated nothing yet (just started) has no "info" in the tree.
    return int(poison.get("info", {}).get("dead_lettered", 0))


def listed(url: str) -> list[dict[str, object]]:
    proc = dlq(url, "list", "--json")
    assert proc.proc.returncode == 0, proc.err
    return [json.loads(line) for line in proc.out]


def test_list_show_retry_and_purge_dead_letters(nats: NatsServer, tmp_path: Path) -> None:
    poison_dead_letters(nats, "p1")
    [letter] = listed(nats.url)
    assert (letter["job"], letter["reason"], letter["deliveries"]) == (
        "poison",
        "max deliveries",
        2,
    )
    assert json.loads(str(letter["payload"])) == {"id": "p1", "seconds": 0.0}
    assert letter["payload_encoding"] == "utf-8"
    assert "always fails" in str(letter["traceback"])
    first = letter["id"]

    table = dlq(nats.url, "list")
    assert table.proc.returncode == 0
    header, row = table.out
    assert header.split() == ["ID", "JOB", "REASON", "DELIVERIES", "FAILED", "AT", "(UTC)", "ERROR"]
    assert re.fullmatch(
        rf"{first} +poison +max deliveries +2 +\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ +"
        r"ValueError: poison p1 always fails",
        row,
    ), row
    assert table.err == []

    show = dlq(nats.url, "show", str(first))
    assert show.proc.returncode == 0
    text = "\n".join(show.out)
    assert f"dead letter {first} in jobsapp" in text
    assert "subject:     megatrio.jobsapp.jobs.poison (sequence 1)" in text
    assert "error:       ValueError: poison p1 always fails" in text
    assert 'payload:     {"id":"p1","seconds":0.0}' in text
    assert show.out[show.out.index("traceback:") + 1].startswith("  Traceback (most recent")
    assert json.loads("\n".join(dlq(nats.url, "show", str(first), "--json").out)) == letter

    retry = dlq(nats.url, "retry", str(first))
    assert retry.proc.returncode == 0, retry.err
    [line] = retry.out
    assert re.fullmatch(rf"retried dead letter {first} \(poison\) as sequence \d+", line), line
    assert listed(nats.url) == []
    # The retried job runs again in a newly served app, and fails into the DLQ again.
    poison_dead_letters(nats)
    [again] = listed(nats.url)
    assert again["id"] != first
    assert again["payload"] == letter["payload"]
    assert again["sequence"] != letter["sequence"]

    # An app of that name that no longer declares the job: reported, left in place.
    (tmp_path / "renamed.py").write_text(
        "import megatrio\n\napp = megatrio.App('jobsapp')\n\n\n"
        "@app.job('greet')\nasync def greet(payload):\n    pass\n"
    )
    stale = Process(
        ["dlq", "retry", "renamed:app", "--app-dir", str(tmp_path), "--all"],
        env={"MEGATRIO_NATS_URL": nats.url},
    )
    assert stale.finish() == 1
    assert stale.err == [
        f"dead letter {again['id']}: app jobsapp declares no job 'poison' any more; "
        "left in the queue"
    ]
    assert [entry["id"] for entry in listed(nats.url)] == [again["id"]]

    purge = dlq(nats.url, "purge", "--all")
    assert (purge.proc.returncode, purge.out) == (0, ["purged 1 dead letter from jobsapp"])
    assert dlq(nats.url, "list").out == ["no dead letters in jobsapp"]


@pytest.mark.parametrize("action", ["show", "retry", "purge"])
def test_an_unknown_id_is_one_line_and_exit_two(nats: NatsServer, action: str) -> None:
    proc = dlq(nats.url, action, "42")
    assert proc.proc.returncode == 2
    assert proc.err == ["megatrio: error: no dead letter 42 in jobsapp"]
    assert proc.out == []


@pytest.mark.parametrize("action", [["list"], ["show", "1"], ["retry", "--all"], ["purge", "1"]])
def test_without_nats_url_the_embedded_dead_letters_cannot_be_reached(action: list[str]) -> None:
    proc = dlq("", *action)
    assert proc.proc.returncode == 2
    assert proc.err == [EMBEDDED]


def test_an_unreachable_nats_is_one_line_exit_one_without_credentials() -> None:
    port = free_port()  # nothing listens there
    proc = dlq(f"nats://ops:s3cret@127.0.0.1:{port}", "list")
    assert proc.proc.returncode == 1
    [line] = proc.err
    assert line.startswith(f"megatrio: error: cannot reach NATS at nats://ops:***@127.0.0.1:{port}")
    assert "s3cret" not in line
    assert proc.out == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retry"], "dlq retry: give the dead-letter ids (from dlq list) or --all"),
        (["purge", "3", "--all"], "dlq purge: give dead-letter ids or --all, not both"),
    ],
)
def test_retry_and_purge_need_ids_or_all(args: list[str], message: str) -> None:
    proc = dlq("", *args)
    assert proc.proc.returncode == 2
    assert proc.err == [f"megatrio: error: {message}"]


def test_an_id_that_is_not_a_number_is_a_usage_error_of_the_action() -> None:
    proc = dlq("", "show", "x1")
    assert proc.proc.returncode == 2
    assert proc.err[0].startswith("usage: megatrio dlq show ")
    assert proc.err[-1] == (
        "megatrio dlq show: error: argument ID: expected a dead-letter id (a number >= 1), got 'x1'"
    )


def test_help_lists_the_actions_and_what_each_does() -> None:
    top = Process(["dlq", "--help"])
    assert top.finish() == 0
    text = "\n".join(top.out)
    for action in ("list", "show", "retry", "purge"):
        assert re.search(rf"^  {action}  +\S", text, re.M), action
    assert "exit codes:" in text
    described = {
        "list": "one line each",
        "show": "traceback",
        "retry": "fresh msg id",
        "purge": "Remove dead letters",
    }
    for action, words in described.items():
        proc = Process(["dlq", action, "--help"])
        assert proc.finish() == 0
        help_text = " ".join(" ".join(proc.out).split())
        assert words in help_text, action
        assert "MODULE:ATTR" in help_text
        assert "--app-dir" in help_text
        assert not re.search(r"``|:(class|func|meth|attr|mod):", help_text)
    main = Process(["--help"])
    assert main.finish() == 0
    assert re.search(
        r"^    dlq +list, show, retry or purge the dead letters", "\n".join(main.out), re.M
    )
