"""An outside Flight SQL client: Python's ADBC driver, as an analyst would use it.

Usage: adbc_client.py ADDR TOKEN
Prints one JSON object with what the client saw.
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_flightsql import DatabaseOptions

addr, token = sys.argv[1], sys.argv[2]
conn = flightsql.connect(
    f"grpc://{addr}",
    db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"},
)
with conn.cursor() as cur:
    cur.execute("SELECT count(*) AS n FROM disbursements")
    (count,) = cur.fetchone()
    cur.execute("SELECT subsidy_type, sum(amount) AS total FROM disbursements GROUP BY subsidy_type ORDER BY subsidy_type")
    by_type = {row[0]: str(row[1]) for row in cur.fetchall()}

objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
tables = sorted(
    t["table_name"]
    for catalog in objects
    for schema in catalog["catalog_db_schemas"] or []
    for t in schema["db_schema_tables"] or []
)
info = conn.adbc_get_info()
conn.close()
print(json.dumps({"count": count, "by_type": by_type, "tables": tables, "vendor": info.get("vendor_name")}))
