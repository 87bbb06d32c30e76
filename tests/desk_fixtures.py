"""A small ServiceNow-shaped export (display headers, labels, Problem groups, dates) for
the tests of user-added data sets and the pipeline on them."""

from __future__ import annotations

import pandas as pd

TOPICS = {
    ("Network", "VPN"): "vpn tunnel drops anyconnect gateway remote access",
    ("Network", "WiFi"): "wifi wireless access point signal ssid",
    ("Hardware", "Printer"): "printer toner paper jam tray print queue",
    ("Hardware", "Laptop"): "laptop screen battery keyboard docking station",
    ("Access", "Password"): "password reset locked account expired login",
    ("Access", "Permissions"): "permission folder share access rights group",
}


def servicenow_export(n_per_class: int = 80) -> pd.DataFrame:
    """A ServiceNow-shaped export: display headers, 6 fine classes, a Problem column that
    groups incidents in threes, opened dates increasing with the number."""
    rows = []
    for c, ((cat, sub), words) in enumerate(TOPICS.items()):
        vocab = words.split()
        for i in range(n_per_class):
            k = c * n_per_class + i
            rows.append({
                "Number": f"INC{k:05d}",
                "Short description": f"{vocab[i % len(vocab)]} {vocab[(i + 2) % len(vocab)]} "
                                     f"problem {i}",
                "Description": " ".join(vocab[(i + j) % len(vocab)] for j in range(6)) +
                               f" reported by user {k}",
                "Category": cat, "Subcategory": sub,
                "Problem": f"PRB{c:02d}{i // 3:02d}",
                "Opened": (pd.Timestamp("2025-01-01") + pd.Timedelta(hours=7 * k)).isoformat(),
                "Close notes": f"fixed {sub.lower()} issue",
            })
    return pd.DataFrame(rows)
