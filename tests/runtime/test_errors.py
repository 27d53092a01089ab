"""The small shared helpers behind every one-line error."""

from lcm_runtime.errors import first_line
from lcm_runtime.meminfo import meminfo_bytes


def test_first_line_of_an_exception():
    assert first_line(ValueError("bad value\nmore detail")) == "bad value"
    assert first_line(ValueError("\n\n  \nsecond")) == "second"
    assert first_line(ValueError("")) == "ValueError"  # a copy of this used to raise IndexError here
    assert first_line(KeyError()) == "KeyError"
    assert first_line(RuntimeError("x" * 500)) == "x" * 200 and len(first_line(RuntimeError("y" * 50), 10)) == 10


def test_meminfo_fields(tmp_path):
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:       24000000 kB\nMemAvailable:   1000 kB\nBroken: x kB\n")
    assert meminfo_bytes("MemTotal", str(fake)) == 24000000 * 1024
    assert meminfo_bytes("MemAvailable", str(fake)) == 1000 * 1024
    assert meminfo_bytes("Broken", str(fake)) is None and meminfo_bytes("Missing", str(fake)) is None
    assert meminfo_bytes("MemTotal", str(tmp_path / "nothing")) is None
