"""Python against the option table every front end shares (tests/options.tsv): namespace
creation, namespace enables and memfd devices accept and refuse exactly the values the table
says, and their signatures and objects show the defaults it names. The command line and the C
ABI run the same table.
"""

import gc
import inspect
import pathlib

import pytest

import devmap

TABLE = pathlib.Path(__file__).resolve().parents[3] / "tests" / "options.tsv"


def rows():
    out = []
    for line in TABLE.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        fixed = dict(kv.split("=", 1) for kv in cols[4].split(",")) if len(cols) > 4 else {}
        out.append((cols[0], cols[1], cols[2], cols[3], fixed))
    return out


def default_of(function, option):
    return inspect.signature(function).parameters[option].default


def attempt(call):
    try:
        result = call()
    except devmap.InvalidArgument:
        return False, None
    return True, result


@pytest.mark.parametrize("verb,option,value,expect,fixed", rows())
def test_python_accepts_refuses_and_defaults_as_the_table_says(
    tmp_path, verb, option, value, expect, fixed
):
    if verb == "device":
        if expect == "default":
            got = default_of(devmap.Device.memfd, option)
            # "cores": None in the signature, the library's default of one handler per core.
            assert str(got) == ("None" if value == "cores" else value)
            return
        kwargs = {"align": "4K" if option == "align" else "2M"}
        kwargs[option] = int(value) if option in ("handlers", "zero_ahead", "fault_around") else value
        ok, dev = attempt(lambda: devmap.Device.memfd(fixed.get("size", "4M"), **kwargs))
        assert ok == (expect == "ok")
        if dev is not None:
            dev.close()
        return
    with devmap.Region.create(tmp_path / "region", "8G") as region:
        if verb == "create-namespace":
            if expect == "default":
                info = region.create_namespace("d", "64M")
                got = info[option]
                got = devmap_size(got) if option == "align" else got
                assert got == value
                assert str(default_of(devmap.Region.create_namespace, option)) == value
                return
            kwargs = {"size": "64M"}
            kwargs.update(fixed)
            kwargs[option] = value
            ok, _ = attempt(lambda: region.create_namespace("n", **kwargs))
            assert ok == (expect == "ok")
            return
        assert verb == "enable-namespace", verb
        region.create_namespace("e", "64M")
        if expect == "default":
            assert default_of(devmap.Region.enable, option) == value
            dev = region.enable("e")
            assert getattr(dev, option) == value
            dev.close()
            return
        ok, dev = attempt(lambda: region.enable("e", **{option: value}))
        assert ok == (expect == "ok")
        if dev is not None:
            dev.close()
        gc.collect()


def devmap_size(nbytes):
    """A byte count as the table spells it: the largest binary unit dividing it (2M)."""
    for shift, unit in ((30, "G"), (20, "M"), (10, "K")):
        if nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return str(nbytes)
