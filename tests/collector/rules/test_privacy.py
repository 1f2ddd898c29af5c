"""File paths in alerts lose the account name (docs/privacy.md), on Windows and Linux."""

from __future__ import annotations

import pytest

from campuswatch.collector.rules.privacy import minimise_paths


@pytest.mark.parametrize(
    ("raw", "minimised"),
    [
        (r"C:\Users\nguyen.van.a\Downloads\x.exe", r"C:\Users\<user>\Downloads\x.exe"),
        (
            r"c:\users\Nguyen Van A\AppData\Local\Temp\a.dll",
            r"c:\users\<user>\AppData\Local\Temp\a.dll",
        ),
        ("C:/Users/hocsinh/Desktop/game.exe", "C:/Users/<user>/Desktop/game.exe"),
        (
            r"C:\Documents and Settings\giaovien\My Documents\a.doc",
            r"C:\Documents and Settings\<user>\My Documents\a.doc",
        ),
        (r"C:\Users\Public\Downloads\x.exe", r"C:\Users\Public\Downloads\x.exe"),
        (r"C:\Windows\Temp\x.exe", r"C:\Windows\Temp\x.exe"),
        ("/home/alice/Downloads/game_setup.sh", "/home/<user>/Downloads/game_setup.sh"),
        ("/media/bob/USB/autorun.inf", "/media/<user>/USB/autorun.inf"),
        ("/Users/carol/Library/x", "/Users/<user>/Library/x"),
        ("/tmp/x.sh", "/tmp/x.sh"),
        (
            r"Trojan:Win32/Wacatac.B!ml found in C:\Users\hocsinh\Downloads\game_setup.exe",
            r"Trojan:Win32/Wacatac.B!ml found in C:\Users\<user>\Downloads\game_setup.exe",
        ),
        (
            "quarantined /home/dave/a and /home/erin/b",
            "quarantined /home/<user>/a and /home/<user>/b",
        ),
        ("no path here", "no path here"),
    ],
)
def test_profile_folder_names_are_replaced(raw: str, minimised: str) -> None:
    assert minimise_paths(raw) == minimised


def test_minimising_twice_changes_nothing() -> None:
    once = minimise_paths(r"C:\Users\alice\x.exe /home/bob/y")
    assert minimise_paths(once) == once
