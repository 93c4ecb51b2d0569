"""tincd's command line: tinc's options, and configuration errors ending with status 1 before
anything starts."""
import pytest

from tincapp.tools import tincd


def test_short_and_long_options():
    o = tincd.parse_args(["-c", "/x", "-D", "-d5", "-o", "Port=1", "-oMode=switch", "-L",
                          "--pidfile=/p", "--logfile", "-U", "nobody", "--bypass-security"])
    assert o.confbase == "/x" and not o.detach and o.debug_level == 5
    assert o.options == ["Port=1", "Mode=switch"] and o.mlock and o.pidfile == "/p"
    assert o.logfile is None and o.user == "nobody"


def test_debug_increments():
    o = tincd.parse_args(["-d", "-Dd", "--debug", "--net=foo", "--logfile=/l"])
    assert o.debug_increments == 3 and o.debug_level is None and not o.detach
    assert o.netname == "foo" and o.logfile == "/l"


@pytest.mark.parametrize("argv", [["-x"], ["--nope"], ["-c"], ["stray"], ["--help=1"],
                                  ["-dfoo"]])
def test_bad_arguments(argv):
    with pytest.raises(tincd.UsageError):
        tincd.parse_args(argv)


def test_help_and_version(capsys):
    assert tincd.main(["tincd", "--help"]) == 0
    assert "--no-detach" in capsys.readouterr().out
    assert tincd.main(["tincd", "--version"]) == 0
    assert "17.7" in capsys.readouterr().out


def test_config_error_exits_1_without_detaching(tmp_path, capsys):
    (tmp_path / "tinc.conf").write_text("Port = 655\n")
    assert tincd.main(["tincd", "-c", str(tmp_path), f"--pidfile={tmp_path}/pid"]) == 1
    assert "Name" in capsys.readouterr().err
    assert not (tmp_path / "pid").exists()


def test_unknown_option_exits_1(capsys):
    assert tincd.main(["tincd", "--frobnicate"]) == 1
    assert "unrecognized option" in capsys.readouterr().err
