"""Table files of a faust app's rocksdb:// stores (evstream.streams.faust_worker): trusted after a clean
stop only, one worker per data dir."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from evstream.errors import ConfigError
from evstream.streams import faust_worker as worker_module
from evstream.streams import worker as native_worker
from evstream.streams.faust_worker import prepare_table_files


def app(tmp_path: Path, store: str = "rocksdb:") -> Any:
    return cast(Any, SimpleNamespace(conf=SimpleNamespace(store=store, tabledir=tmp_path / "v1" / "tables")))


@pytest.fixture(autouse=True)
def _release_locks() -> Any:
    yield
    for locks in (worker_module._LOCKS, native_worker._LOCKS):
        for lock in locks:
            lock.close()
        locks.clear()


def test_files_without_a_clean_stop_are_removed_and_kept_after_one(tmp_path: Path) -> None:
    tables = tmp_path / "v1" / "tables"
    (tables / "totals-0.db").mkdir(parents=True)
    marker = prepare_table_files(app(tmp_path))
    assert marker is not None
    assert not (tables / "totals-0.db").exists()  # no marker: rebuilt from the changelogs
    (tables / "totals-0.db").mkdir()
    marker.touch()  # what a clean stop leaves
    worker_module._LOCKS.pop().close()  # that worker exited
    again = prepare_table_files(app(tmp_path))
    assert (tables / "totals-0.db").exists()  # trusted
    assert again is not None
    assert not again.exists()  # until this run stops cleanly itself


def test_a_second_worker_on_the_same_files_is_refused(tmp_path: Path) -> None:
    prepare_table_files(app(tmp_path))
    with pytest.raises(ConfigError, match="own EVSTREAM_STREAMS_DATA_DIR"):
        prepare_table_files(app(tmp_path))


def test_in_memory_tables_need_nothing(tmp_path: Path) -> None:
    assert prepare_table_files(app(tmp_path, "memory:")) is None
    assert not (tmp_path / "v1").exists()


def test_a_second_native_worker_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    native_worker.lock_data_dir(tmp_path / "data")
    assert (tmp_path / "data" / ".evstream-worker.lock").exists()
    with pytest.raises(ConfigError, match="own EVSTREAM_STREAMS_DATA_DIR"):
        native_worker.lock_data_dir(tmp_path / "data")
    native_worker.lock_data_dir(tmp_path / "other")  # another data dir: fine
    assert len(native_worker._LOCKS) == 2
