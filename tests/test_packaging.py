"""What `pip install` of the wheel gives: the plugin registered with Datasette, every runtime
dependency present, and the bundled walship found beside the interpreter."""

import os
import subprocess
import sys
import sysconfig

import datasette_litestream
from conftest import VENV_BIN
from datasette_litestream import config


def test_the_installed_package_is_under_test():
    assert datasette_litestream.__file__.startswith(sysconfig.get_path("purelib")), datasette_litestream.__file__


def test_the_bundled_walship_is_found():
    path = config.find_walship()
    assert path == os.path.join(sysconfig.get_path("scripts"), "walship")
    out = subprocess.run([path, "version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("walship v")


def test_datasette_loads_the_plugin():
    out = subprocess.run([os.path.join(VENV_BIN, "datasette"), "plugins"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert '"name": "datasette-litestream"' in out.stdout
    assert '"startup"' in out.stdout and '"shutdown"' in out.stdout


def test_walship_path_overrides(tmp_path):
    fake = tmp_path / "walship"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert config.find_walship(str(fake)) == str(fake)
    assert sys.executable  # the venv's interpreter runs these tests
