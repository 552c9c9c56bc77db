"""benchmarks/device_check.py's machinery: a part that overruns its cap is stopped with all its
processes and recorded, and pytest's JUnit files are read into counts."""

import importlib.util
import time
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"


@pytest.fixture(scope="module")
def dc():
    spec = importlib.util.spec_from_file_location("device_check", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_command_over_its_cap_is_stopped_with_its_children(dc, tmp_path):
    log = dc.Log(tmp_path / "log")
    marker = tmp_path / "child_survived"
    # the child outlives the cap unless the whole process group is stopped
    cmd = ["bash", "-c", f"(sleep 1.5; touch {marker}) & echo started; sleep 30"]
    t = time.perf_counter()
    r = dc.run(cmd, 0.5, log)
    assert r["timed_out"] and r["rc"] is None and time.perf_counter() - t < 10
    assert "started" in r["tail"]
    time.sleep(2.0)
    assert not marker.exists()
    assert "TIMEOUT" in (tmp_path / "log").read_text()


def test_a_command_within_its_cap_reports_its_exit_code_and_output(dc, tmp_path):
    r = dc.run(["bash", "-c", "echo one; echo two; exit 3"], 30.0, dc.Log(tmp_path / "log"))
    assert (r["rc"], r["timed_out"], r["tail"], r["lines"]) == (3, False, ["one", "two"], ["one", "two"])


def test_junit_files_become_counts_and_failed_test_names(dc, tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_a" name="test_ok"/>'
        '<testcase classname="tests.test_a" name="test_bad"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_cuda" name="test_gpu"><skipped/></testcase>'
        '<testcase classname="tests.test_a" name="test_ok2"/></testsuite></testsuites>')
    c = dc.junit_counts(xml)
    assert {k: c[k] for k in ("tests", "passed", "failures", "errors", "skipped")} == \
        {"tests": 4, "passed": 2, "failures": 1, "errors": 0, "skipped": 1}
    assert c["failed_tests"] == ["tests.test_a::test_bad"]
    assert dc.junit_counts(tmp_path / "missing.xml") is None


def test_pytest_verbose_lines_give_counts_when_the_junit_file_is_missing(dc):
    lines = ["tests/test_cuda.py::test_a PASSED  [ 10%]", "tests/test_cuda.py::test_b[flex] FAILED  [ 20%]",
             "tests/test_cuda.py::test_c SKIPPED (needs a CUDA device)  [ 30%]", "some other line"]
    c = dc.verbose_counts(lines)
    assert (c["tests"], c["passed"], c["failures"], c["skipped"]) == (3, 1, 1, 1)
    assert c["failed_tests"] == ["tests/test_cuda.py::test_b[flex]"]


def test_gpu_part_caps_end_the_check_within_eight_minutes(dc):
    assert sum(dc.CAPS["gpu"].values()) <= 8 * 60 - 30  # start-up, wheels and the report need the rest
    assert sorted(dc.ORDER) == sorted(dc.CAPS["gpu"])
