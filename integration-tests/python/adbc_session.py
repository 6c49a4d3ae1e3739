"""An outside client asks the city for partial results with a Flight SQL session option,
and reads what the city told of its answers, the nodes missing and the groups held back,
from the session's options. A second connection, as a SQL tool that sends statements only,
does the same with `SET` and `SHOW`.

Usage: adbc_session.py ADDR TOKEN GROUPED_QUERY
Prints one JSON object with what the client saw.
"""
import json
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql
from adbc_driver_flightsql import ConnectionOptions, DatabaseOptions

addr, token = sys.argv[1], sys.argv[2]
conn = flightsql.connect(
    f"grpc://{addr}",
    db_kwargs={
        DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}",
        # Sessions live in a cookie, which the driver keeps only when asked to.
        DatabaseOptions.WITH_COOKIE_MIDDLEWARE.value: "true",
    },
)


def session_options():
    """The session's options. The driver may store the cookie of the call that set them
    only after that call returned (it came under CI's load, past a second too): until it
    has, the city names no session, and the driver is asked again, for at most 5 s."""
    for _ in range(100):
        try:
            return conn.adbc_connection.get_option(ConnectionOptions.OPTION_SESSION_OPTIONS.value)
        except Exception as e:  # the driver raises its own error types
            if "no live session" not in str(e):
                raise
            time.sleep(0.05)
    return conn.adbc_connection.get_option(ConnectionOptions.OPTION_SESSION_OPTIONS.value)


seen = {}
query = "SELECT count(*) FROM disbursements"
with conn.cursor() as cur:
    try:
        cur.execute(query)
        seen["whole"] = cur.fetchone()[0]
    except Exception as e:  # the driver raises its own error types
        seen["whole_error"] = str(e)
    prefix = ConnectionOptions.OPTION_BOOL_SESSION_OPTION_PREFIX.value
    conn.adbc_connection.set_options(**{f"{prefix}partial_results": "true"})
    seen["options"] = json.loads(session_options())
    cur.execute(query)
    seen["partial"] = cur.fetchone()[0]
    # The session keeps what the headers told of its last answer, as options.
    def notes():
        options = json.loads(session_options())
        return {name: options.get(name) for name in ("missing_nodes", "suppressed_groups")}
    seen["partial_notes"] = notes()
    cur.execute(sys.argv[3])
    seen["grouped_rows"] = len(cur.fetchall())
    seen["grouped_notes"] = notes()
    # A statement refused while it is planned leaves no notes of the answer before it.
    try:
        cur.execute("SELECT person_id FROM disbursements")
    except Exception:
        pass
    seen["refused_notes"] = notes()
    try:
        conn.adbc_connection.set_options(**{f"{prefix}no_such_option": "true"})
    except Exception as e:
        seen["unknown_error"] = str(e)
conn.close()

conn = flightsql.connect(
    f"grpc://{addr}",
    db_kwargs={
        DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}",
        DatabaseOptions.WITH_COOKIE_MIDDLEWARE.value: "true",
    },
)
with conn.cursor() as cur:
    def show(name):
        cur.execute(f"SHOW {name}")
        return cur.fetchall()

    seen["sql_shown_before"] = show("partial_results")
    cur.execute("SET partial_results = true")
    seen["sql_shown"] = show("partial_results")
    cur.execute(query)
    seen["sql_partial"] = cur.fetchone()[0]
    seen["sql_missing"] = show("missing_nodes")
    try:
        cur.execute("SET datafusion.execution.batch_size = 10")
    except Exception as e:  # the driver raises its own error types
        seen["sql_set_error"] = str(e)
conn.close()
print(json.dumps(seen))
