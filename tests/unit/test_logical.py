"""The logical snapshot's pure parts (the in-container pipelines: test_pgexec.py)."""

from __future__ import annotations

from snapvol.pg import logical


def test_zstd_report_formats() -> None:
    new = "/*stdin*\\            : 15.53%   (224524 B =>  34870 B, /*stdout*\\) \n"
    old = "/*stdin*\\            : 15.53%   (224524 => 34870 bytes, /*stdout*\\) \n"
    for text in (new, old):
        assert logical._ZSTD_REPORT.findall(text) == [("224524", "34870")]
