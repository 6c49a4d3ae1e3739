"""An outside Flight SQL client: Python's ADBC driver, as an analyst would use it.

Usage: adbc_client.py ADDR TOKEN COUNTY
Prints one JSON object with what the client saw.
"""
import json
import sys

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow
from adbc_driver_flightsql import DatabaseOptions

addr, token, county = sys.argv[1], sys.argv[2], sys.argv[3]
conn = flightsql.connect(
    f"grpc://{addr}",
    db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"},
)
with conn.cursor() as cur:
    cur.execute("SELECT count(*) AS n FROM disbursements")
    (count,) = cur.fetchone()
    cur.execute("SELECT subsidy_type, sum(amount) AS total FROM disbursements GROUP BY subsidy_type ORDER BY subsidy_type")
    by_type = {row[0]: str(row[1]) for row in cur.fetchall()}
    # A prepared statement with bound values, run twice with different ones.
    query = "SELECT count(*) AS n FROM disbursements WHERE county_code = ? AND amount >= ?"
    cur.execute(query, (county, 0))
    (county_count,) = cur.fetchone()
    cur.execute(query, ("999999", 0))
    (no_county_count,) = cur.fetchone()
    try:
        cur.execute(query, (county,))
        wrong_count = "answered"
    except Exception as e:
        wrong_count = str(e)
    # The answer's columns without running the query (Flight's GetSchema).
    schema = cur.adbc_execute_schema(
        "SELECT subsidy_type, sum(amount) AS total, count(*) AS n FROM disbursements GROUP BY 1"
    )
    answer_columns = [[f.name, str(f.type)] for f in schema]
# Writes of any kind are refused by name.
writes = {}
with conn.cursor() as cur:
    for name, write in [
        ("delete", lambda: cur.execute("DELETE FROM disbursements")),
        ("ingest", lambda: cur.adbc_ingest("disbursements", pyarrow.table({"amount": [1]}), mode="append")),
    ]:
        try:
            write()
            writes[name] = "accepted"
        except Exception as e:
            writes[name] = str(e)
# Incremental execution, which polls for the answer's endpoints (Flight's PollFlightInfo).
with conn.cursor() as cur:
    cur.adbc_statement.set_options(**{"adbc.statement.exec.incremental": "true"})
    partitions, _ = cur.adbc_execute_partitions("SELECT count(*) AS n FROM disbursements")
    cur.adbc_read_partition(partitions[0])
    (polled_count,) = cur.fetchone()

objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
tables = sorted(
    t["table_name"]
    for catalog in objects
    for schema in catalog["catalog_db_schemas"] or []
    for t in schema["db_schema_tables"] or []
)
columns = conn.adbc_get_objects(
    depth="columns", table_name_filter="disbursements"
).read_all().to_pylist()
column_types = {
    c["column_name"]: [c["xdbc_type_name"], c["xdbc_column_size"], c["xdbc_decimal_digits"]]
    for catalog in columns
    for schema in catalog["catalog_db_schemas"] or []
    for t in schema["db_schema_tables"] or []
    for c in t["table_columns"] or []
}
info = conn.adbc_get_info()
table_types = conn.adbc_get_table_types()
conn.close()
print(json.dumps({
    "count": count,
    "by_type": by_type,
    "county_count": county_count,
    "no_county_count": no_county_count,
    "wrong_count": wrong_count,
    "answer_columns": answer_columns,
    "polled_count": polled_count,
    "tables": tables,
    "column_types": column_types,
    "table_types": table_types,
    "vendor": info.get("vendor_name"),
    "writes": writes,
}))
