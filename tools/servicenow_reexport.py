"""Re-export the bundled data sets as a service desk would hand them over, to check that
`itsm data add` + `itsm train` reproduce the bundled results (README "Your own incidents").

    python tools/servicenow_reexport.py OUT_DIR
    -> OUT_DIR/it_tickets_servicenow.csv    the labelled it_tickets subset, ServiceNow headers
       OUT_DIR/hadoop_servicenow.csv        the Hadoop reports, ServiceNow headers
       OUT_DIR/hadoop_duplicates.csv        their duplicate links (two number columns)

Reads the processed bundled files (run `itsm data build` first); never writes into them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from itsm_core.data.datasets import processed_path


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    it = pd.read_parquet(processed_path("it_tickets"))
    lab = it[it["category"].notna()]
    pd.DataFrame({"Number": lab["number"], "Short description": "",
                  "Description": lab["description"], "Category": lab["category"],
                  "Subcategory": lab["subcategory"]}).to_csv(
        out / "it_tickets_servicenow.csv", index=False)
    bugs_path = processed_path("gitbugs_hadoop")
    bugs = pd.read_parquet(bugs_path)
    pd.DataFrame({"Number": bugs["number"], "Short description": bugs["short_description"],
                  "Description": bugs["description"], "Opened": bugs["opened_at"]}).to_csv(
        out / "hadoop_servicenow.csv", index=False)
    links = pd.read_csv(bugs_path.parent / "gitbugs_hadoop_links.csv", dtype=str)
    links[["a", "b"]].rename(columns={"a": "incident", "b": "duplicate_of"}).to_csv(
        out / "hadoop_duplicates.csv", index=False)
    print(f"wrote {len(lab)} + {len(bugs)} incidents and {len(links)} links to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "servicenow_reexport"))
