"""Progress of long work (trainables/progress.py): a command under a pseudo-terminal shows a
tqdm bar with rate and ETA; under a pipe, whole lines every tenth of the work; --quiet shows
neither; a command's own lines on stdout are never broken by a bar."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from trainables.progress import Progress, say


def check_under_a_terminal(data: Path, *more: str) -> str:
    """`search.data check` with stdout and stderr on a pseudo-terminal: what the terminal got."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    command = [sys.executable, "-m", "search.data", "check", "deepdrid_finetune", "--data",
               str(data), *more]
    process = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave,
                               env=os.environ)
    os.close(slave)
    got = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the command has ended and closed the terminal
            break
        if not chunk:
            break
        got += chunk
    os.close(master)
    assert process.wait(timeout=120) == 0, got.decode(errors="replace")
    return got.decode()


def check_under_a_pipe(data: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "search.data", "check", "deepdrid_finetune",
                           "--data", str(data), *more], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MEDTUNE_PROGRESS_SECONDS": "0"})


def test_a_terminal_shows_a_bar_with_rate_and_eta_and_the_commands_lines_stay_whole(
        course_demo: Path) -> None:
    shown = check_under_a_terminal(course_demo)
    bar = [part for part in re.split(r"[\r\n]+", shown) if part.startswith("checking images:")]
    assert bar, shown
    # tqdm's last state: every image, the elapsed time and the rate
    assert re.match(r"checking images: 100%\|[█]+\| 44/44 \[\d\d:\d\d<00:00, +[\d.]+ images/s\]",
                    bar[-1]), bar[-1]
    lines = shown.split("\r\n")
    assert f"{course_demo}: OK, 44 images" in lines  # the command's own line, whole
    assert not any("checking images" in line and "OK, 44 images" in line for line in lines)


def test_a_pipe_gets_a_line_every_tenth_and_quiet_gets_none(course_demo: Path) -> None:
    piped = check_under_a_pipe(course_demo)
    assert piped.returncode == 0, piped.stderr
    lines = piped.stderr.splitlines()
    assert "\r" not in piped.stderr
    steps = [re.fullmatch(r"checking images: (\d+)/44 images \((\d+)%\), [\d.]+ images/s, "
                          r"about \d+ s left", line) for line in lines[:-1]]
    assert all(steps) and 8 <= len(steps) <= 10, lines
    done = [int(m[1]) for m in steps if m]
    assert done == sorted(done) and all(int(m[2]) == round(100 * int(m[1]) / 44)
                                        for m in steps if m)
    assert re.fullmatch(r"checking images: 44/44 images in \d+ s \([\d.]+ images/s\)", lines[-1])
    assert piped.stdout.rstrip().endswith(f"{course_demo}: OK, 44 images")

    quiet = check_under_a_pipe(course_demo, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == piped.stdout
    assert "checking images" not in check_under_a_terminal(course_demo, "--quiet")


def test_lines_come_at_tenths_at_most_once_a_gap_and_short_work_says_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDTUNE_PROGRESS_SECONDS", "0")
    monkeypatch.delenv("MEDTUNE_QUIET", raising=False)
    out = io.StringIO()  # not a terminal
    with Progress(20, "work", "items", stream=out) as progress:
        for _ in range(20):
            progress.update()
    said = out.getvalue().splitlines()
    assert [line.split(" items")[0] for line in said[:-1]] == [
        f"work: {n}/20" for n in range(2, 20, 2)]
    assert said[-1].startswith("work: 20/20 items in 0 s (")

    monkeypatch.setenv("MEDTUNE_PROGRESS_SECONDS", "3600")  # nothing is due within the work
    out = io.StringIO()
    with Progress(20, "work", "items", stream=out) as progress:
        progress.update(20)
    assert out.getvalue() == ""

    monkeypatch.setenv("MEDTUNE_PROGRESS_SECONDS", "0")
    monkeypatch.setenv("MEDTUNE_QUIET", "1")
    out = io.StringIO()
    with Progress(20, "work", "items", stream=out) as progress:
        progress.update(20)
    assert out.getvalue() == ""


def test_a_progress_line_by_hand() -> None:
    """The lines of slow work between whole steps too (`search.bench collect` after each chunk,
    where a bar would run through the searches' own lines)."""
    from trainables.progress import progress_line

    assert progress_line("collect x", 2, 5, "configurations trained", 60) == (
        "collect x: 2/5 configurations trained (40%), one every 30 s, about 1:30 left")
    assert progress_line("collect x", 5, 5, "configurations trained", 150) == (
        "collect x: 5/5 configurations trained in 2:30 (one every 30 s)")
    assert progress_line("checking images", 30, 40, "images", 2) == (
        "checking images: 30/40 images (75%), 15.0 images/s, about 1 s left")
    assert progress_line("collect x", 0, 5, "configurations trained", 9) == (
        "collect x: 0/5 configurations trained")


def test_a_line_said_while_a_bar_shows_comes_above_it(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """say() writes a command's line through tqdm when a bar is showing, so the bar is cleared
    first and drawn again below it."""
    from tqdm import tqdm

    monkeypatch.delenv("MEDTUNE_QUIET", raising=False)
    bar = tqdm(total=3, desc="members", file=sys.stdout, mininterval=0)
    bar.update()
    say("member 1: epoch 1")
    bar.update()
    bar.close()
    shown = capsys.readouterr().out
    assert "member 1: epoch 1\n" in shown
    before, after = shown.split("member 1: epoch 1\n")
    assert before.endswith("\r") and "2/3" in after  # the bar was cleared, then redrawn
    say("after the bar")
    assert capsys.readouterr().out == "after the bar\n"


# the drawn and written images of each demo set that is not DeepDRiD's (tested above through
# the course demo): what its progress counts
DEMO_IMAGES = {"medmnist": ("drawing the shapes demo set", 720, "*/*/*.jpeg"),
               "rfmid": ("writing the rfmid demo set", 368, "*/*/*.png"),
               "idrid": ("writing the idrid demo set", 190, "*/*/*/*.jpg"),
               "aptos": ("writing the aptos demo set", 400, "*/*.png"),
               "kaggle_dr": ("writing the kaggle_dr demo set", 190, "*/*.jpeg"),
               "chestxray": ("writing the chestxray demo set", 360, "*/*.jpeg")}


@pytest.mark.parametrize("kind", sorted(DEMO_IMAGES))
def test_every_demo_set_says_how_far_it_is_and_counts_the_images_it_writes(
        kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from trainables.data.demo_sets import demo_writers

    monkeypatch.setenv("MEDTUNE_PROGRESS_SECONDS", "0")
    monkeypatch.delenv("MEDTUNE_QUIET", raising=False)
    what, images, pattern = DEMO_IMAGES[kind]
    demo_writers()[kind](tmp_path)
    lines = capsys.readouterr().err.splitlines()  # not a terminal: lines
    steps = [re.fullmatch(rf"{what}: (\d+)/{images} images \(\d+%\), .*left", line)
             for line in lines[:-1]]
    assert all(steps) and 8 <= len(steps) <= 10, lines
    assert re.fullmatch(rf"{what}: {images}/{images} images in .*", lines[-1]), lines
    assert len(list(tmp_path.glob(pattern))) == images  # what it counted is what it wrote
