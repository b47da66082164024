"""Reading perf's report: rows by dso and symbol, and own time summed by area."""

from __future__ import annotations

import pytest

from loadtest.perf_profile import area_shares, parse_report

OWN = """\
# Total Lost Samples: 0
#
# Samples: 9K of event 'cpu-clock:ppp'
# Overhead  Shared Object                                   Symbol
# ........  ..............................................  .....................
#
    15.40%  [kernel.kallsyms]                               [k] finish_task_switch.isra.0
     3.30%  libpython3.11.so.1.0                            [.] _Py_dict_lookup
     0.70%  _native__mypyc.cpython-311-x86_64-linux-gnu.so  [.] CPyDef_relay___RelayCall___start
     0.50%  loop.cpython-311-x86_64-linux-gnu.so            [.] uv__io_poll
     0.20%  _struct.cpython-311-x86_64-linux-gnu.so         [.] s_unpack_internal
"""
CHILDREN = """\
# Children      Self  Shared Object                                   Symbol
    20.90%     0.70%  _native__mypyc.so  [.] CPyDef_relay___RelayCall___start
"""


def test_rows_are_read_with_their_dso_and_symbol() -> None:
    rows = parse_report(OWN)
    assert rows[0] == (15.4, None, "[kernel.kallsyms]", "finish_task_switch.isra.0")
    assert [r[3] for r in rows[1:3]] == ["_Py_dict_lookup", "CPyDef_relay___RelayCall___start"]
    assert len(rows) == 5  # the header and comment lines are not rows


def test_children_rows_carry_the_total_first_and_self_second() -> None:
    [(total, own, _dso, symbol)] = parse_report(CHILDREN)
    assert (total, own, symbol) == (20.9, 0.7, "CPyDef_relay___RelayCall___start")


def test_own_time_is_summed_by_area() -> None:
    shares = area_shares(parse_report(OWN))
    assert shares["kernel (syscalls, TCP over loopback, scheduling)"] == pytest.approx(0.154)
    assert shares["compiled data path (mypyc)"] == pytest.approx(0.007)
    assert shares["event loop (uvloop)"] == pytest.approx(0.005)
    assert shares["other"] == pytest.approx(0.002)
    assert next(iter(shares)).startswith("kernel")  # largest first
