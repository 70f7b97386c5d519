"""Every config form of the earlier plugin starts walship with the right config; bad config stops
Datasette with a StartupError that names the key and the fix."""

import json
import os

import pytest
from conftest import ACCESS_KEY, SECRET_KEY, make_db, supervisor, wait_synced
from datasette.utils import StartupError

P = "datasette-litestream"


def walship_config(ds):
    with open(supervisor(ds).config_path) as f:
        return json.load(f)


@pytest.mark.asyncio
async def test_all_replicate_templates(tmp_path, make_ds, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = make_db(tmp_path / "data.db")
    config = {"plugins": {P: {"all-replicate": [
        "file://$DB_DIRECTORY/replicas/$DB_NAME", "$PWD/second/$DB_NAME"]}}}  # fmt: skip
    ds = await make_ds([db], config=config)
    [entry] = walship_config(ds)["dbs"]
    assert entry["path"] == db
    assert entry["replicas"] == [
        {"url": f"file://{tmp_path}/replicas/data", "name": "t0"},
        {"url": f"{tmp_path}/second/data", "name": "t1"},
    ]
    await wait_synced(ds)  # two live replicas
    assert os.listdir(tmp_path / "second" / "data" / "ltx" / "0")


@pytest.mark.asyncio
async def test_per_database_replicas_objects_strings_and_settings(tmp_path, make_ds):
    db = make_db(tmp_path / "data.db")
    other = make_db(tmp_path / "other.db")
    config = {"databases": {
        "data": {"plugins": {P: {
            "replicas": [{"path": str(tmp_path / "a")}, f"file://{tmp_path}/b"],
            "monitor-interval": "500ms",
            "max-checkpoint-page-count": 5000,
        }}},
        "other": {"plugins": {P: {"replica": {"url": f"file://{tmp_path}/c", "name": "mine"}}}},
    }}  # fmt: skip
    ds = await make_ds([db, other], config=config)
    cfg = walship_config(ds)
    data, oth = cfg["dbs"]
    assert data["replicas"] == [
        {"path": str(tmp_path / "a"), "name": "file0"},
        {"url": f"file://{tmp_path}/b", "name": "file1"},
    ]
    assert data["monitor-interval"] == "500ms" and data["truncate-page-n"] == 5000
    assert oth["replicas"] == [{"url": f"file://{tmp_path}/c", "name": "mine"}]
    await wait_synced(ds)


@pytest.mark.asyncio
async def test_metrics_addr_with_and_without_host(tmp_path, make_ds):
    from conftest import free_port

    db = make_db(tmp_path / "data.db")
    for form in (":{port}", "127.0.0.1:{port}", "0.0.0.0:{port}"):
        port = free_port()
        config = {"plugins": {P: {"all-replicate": [f"file://{tmp_path}/r"], "metrics-addr": form.format(port=port)}}}
        ds = await make_ds([db], config=config)
        assert walship_config(ds)["addr"] == form.format(port=port).replace(":", "127.0.0.1:", 1) if form[0] == ":" else form.format(port=port)
        data = await wait_synced(ds)
        assert data["metrics_addr"].endswith(f":{port}")
        page = await ds.client.get("/-/litestream-status", actor={"id": "root"})
        assert f":{port}/metrics" in page.text
        await ds.invoke_shutdown()


@pytest.mark.asyncio
async def test_credentials_from_env_values_never_in_the_config_file(tmp_path, make_ds, monkeypatch, s3, bucket):
    endpoint, client = s3
    monkeypatch.setenv("TEST_KEY_ID", ACCESS_KEY)
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET_KEY)
    db = make_db(tmp_path / "data.db")
    config = {"plugins": {P: {
        "access-key-id": {"$env": "TEST_KEY_ID"},
        "secret-access-key": {"$file": str(secret_file)},
        "all-replicate": [f"s3://{bucket}/$DB_NAME?endpoint={endpoint}&forcePathStyle=true&region=us-east-1"],
    }}}  # fmt: skip
    ds = await make_ds([db], config=config)
    text = open(supervisor(ds).config_path).read()
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    await wait_synced(ds)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.startswith("data/0000/") for k in keys)
    page = await ds.client.get("/-/litestream-status.json", actor={"id": "root"})
    assert SECRET_KEY not in page.text


@pytest.mark.asyncio
async def test_credentials_file_is_read(tmp_path, make_ds, s3, bucket):
    endpoint, client = s3
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"access-key-id": ACCESS_KEY, "secret-access-key": SECRET_KEY}))
    db = make_db(tmp_path / "data.db")
    config = {"plugins": {P: {
        "credentials-file": str(creds), "credentials-refresh-interval": 3600,
        "all-replicate": [f"s3://{bucket}/$DB_NAME?endpoint={endpoint}&forcePathStyle=true&region=us-east-1"],
    }}}  # fmt: skip
    ds = await make_ds([db], config=config)
    assert supervisor(ds).settings.env()["LITESTREAM_SECRET_ACCESS_KEY"] == SECRET_KEY
    await wait_synced(ds)


BAD = [
    ({"all-replicat": ["s3://b/x"]}, None, 'unknown key "all-replicat". Did you mean "all-replicate"?'),
    ({"all-replicate": ["s4://b/$DB_NAME"]}, None, "unsupported scheme 's4' (did you mean \"s3://\"?)"),
    ({"all-replicate": ["s3:///$DB_NAME"]}, None, "has no bucket: use s3://BUCKET/path"),
    ({"all-replicate": ["s3://b/$DB"]}, None, "$DB is no longer supported; use $DB_NAME"),
    ({"all-replicate": "x", "metrics-addr": "localhost"}, None, "is not host:port"),
    ({"all-replicate": ["s3://b/x"], "walship-path": "/nonexistent"}, None, "walship-path: '/nonexistent' is not an executable"),
    ({"access-key-id": "k", "all-replicate": ["s3://b/x"]}, None, "access-key-id and secret-access-key go together"),
    ({"credentials-file": "/x"}, None, "needs credentials-refresh-interval"),
    (None, {"replicas": [{"ur": "s3://b/x"}]}, 'databases.data.plugins.datasette-litestream.replicas[0]: unknown key "ur". Did you mean "url"?'),
    (None, {"replicas": "s3://b/x"}, "replicas: expected a list"),
    (None, {"path": "/elsewhere.db", "replicas": ["s3://b/x"]}, 'unknown key "path"'),
    (None, {"replicas": [{"type": "sftp", "path": "/x"}]}, "type: 'sftp' is not one of file, s3, gs, abs"),
    (None, {"monitor-interval": "1s"}, "no replicas: add replicas"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("top,per_db,message", BAD)
async def test_bad_config_is_a_startup_error(tmp_path, make_ds, top, per_db, message):
    db = make_db(tmp_path / "data.db")
    config = {}
    if top is not None:
        config["plugins"] = {P: top}
    if per_db is not None:
        config["databases"] = {"data": {"plugins": {P: per_db}}}
    ds = await make_ds([db], config=config, start=False)
    with pytest.raises(StartupError) as e:
        await ds.invoke_startup()
    assert message in str(e.value)
    assert str(e.value).startswith("datasette-litestream: ")


@pytest.mark.asyncio
async def test_walship_rejecting_a_setting_is_a_startup_error(tmp_path, make_ds):
    db = make_db(tmp_path / "data.db")
    config = {"databases": {"data": {"plugins": {P: {
        "replicas": [f"file://{tmp_path}/r"], "monitor-interval": "soon"}}}}}  # fmt: skip
    ds = await make_ds([db], config=config, start=False)
    with pytest.raises(StartupError) as e:
        await ds.invoke_startup()
    assert "walship exited at start" in str(e.value) and "monitor-interval" in str(e.value)
