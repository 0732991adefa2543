"""Shared fixtures: ledger databases (SQLite file, PostgreSQL), a real inference node, speech."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from billing.db import Database
from billing.migrate import upgrade_to_head
from tests.fixtures.audio import speak, two_sentences
from tests.fixtures.environment import skip_or_fail
from tests.fixtures.hostile_media import silence_bomb_flac, speech_of
from tests.fixtures.processes import free_port, running

# As long as production requires (32 characters), so one secret serves every environment.
NODE_SECRET = "test-node-secret-of-thirty-two-characters"
# The shared test node serves PocketSphinx (quick on two cores), so gateways under test resolve
# OpenAI's model aliases to it; the tests of the default install path (Whisper) unset this.
TEST_DEFAULT_MODEL = "pocketsphinx-en"
WHISPER_MODEL = "whisper-tiny.en"
ONLINE_MODEL = "tiny-online"


@pytest.fixture(scope="session", autouse=True)
def _torch_cache_of_the_run() -> Iterator[None]:
    """torch makes ``/tmp/torchinductor_<user>`` when a FunASR model loads, in the tests and in
    the node processes they start (which inherit this environment); the run's own directory
    takes it instead, removed at the end of the run."""
    directory = Path(tempfile.mkdtemp(prefix="asrgw-tests-torch-"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCHINDUCTOR_CACHE_DIR", str(directory))
        yield
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _gateway_default_model() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GATEWAY_DEFAULT_MODEL", TEST_DEFAULT_MODEL)
        yield


def postgres_base_url() -> str:
    raw = os.environ.get("DATABASE_URL", "")
    if not raw:
        skip_or_fail("DATABASE_URL is not set; PostgreSQL tests need it")
    url = make_url(raw)
    if url.drivername in {"postgresql", "postgres"}:
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL confined to a fresh schema, dropped afterwards."""
    base = postgres_base_url()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin_engine = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin_engine.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as error:
        admin_engine.dispose()
        skip_or_fail(f"PostgreSQL at DATABASE_URL is unreachable: {error.orig}")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin_engine.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin_engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on SQLite and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    upgrade_to_head(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="session")
def weather_wav(speech_dir: Path) -> Path:
    """espeak-ng saying "the weather is nice today"."""
    return speak("the weather is nice today", speech_dir / "weather.wav")


@pytest.fixture(scope="session")
def two_sentences_wav(speech_dir: Path) -> Path:
    return two_sentences(speech_dir)


@pytest.fixture(scope="session")
def speech_25s_wav(speech_dir: Path) -> Path:
    """25 seconds of continuous speech, 16 kHz mono 16-bit WAV."""
    return speech_of(speech_dir, 25)


@pytest.fixture(scope="session")
def silent_hour_flac(speech_dir: Path) -> bytes:
    """An hour of silence as FLAC: about 29 KB that decode to 230 MB of 16 kHz float32."""
    return silence_bomb_flac(speech_dir, 3600)


@pytest.fixture(scope="session")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real inference node (PocketSphinx) in its own uvicorn process, behind a node secret."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("node") / "node.log"
    environment = {"INFERENCE_NODE_SECRET": NODE_SECRET, "INFERENCE_MODELS": "pocketsphinx-en"}
    with running(["node", "--port", str(port)], environment, f"{url}/health/ready", log):
        yield url


@pytest.fixture(scope="session")
def online_paraformer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight online Paraformer (paraformer-zh-streaming's classes)."""
    from inference.modelgen import build_random_paraformer

    return build_random_paraformer(
        tmp_path_factory.mktemp("models") / "tiny-paraformer-online", streaming=True
    )


@pytest.fixture(scope="session")
def online_node_url(
    tmp_path_factory: pytest.TempPathFactory, online_paraformer_dir: Path
) -> Iterator[str]:
    """A real node serving PocketSphinx (offline) and a tiny online Paraformer, behind the node
    secret, at most two live streams at once."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("online-node") / "node.log"
    environment = {
        "INFERENCE_NODE_SECRET": NODE_SECRET,
        "INFERENCE_MODELS": f"pocketsphinx-en,{ONLINE_MODEL}={online_paraformer_dir}",
        "INFERENCE_DEVICE": "cpu",
        "INFERENCE_MAX_STREAMS": "2",
    }
    with running(["node", "--port", str(port)], environment, f"{url}/health/ready", log):
        yield url


@pytest.fixture(scope="session")
def whisper_node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real node serving the embedded whisper-tiny.en, batching up to 16 items that arrive
    within 50 ms of each other."""
    from tests.fixtures.nodes import node_process

    with node_process(
        tmp_path_factory.mktemp("whisper-node"), WHISPER_MODEL, max_batch=16, max_wait_ms=50
    ) as url:
        yield url
