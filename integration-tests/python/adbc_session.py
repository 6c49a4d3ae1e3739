"""An outside client asks the city for partial results with a Flight SQL session option.

Usage: adbc_session.py ADDR TOKEN
Prints one JSON object with what the client saw.
"""
import json
import sys

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
    seen["options"] = json.loads(
        conn.adbc_connection.get_option(ConnectionOptions.OPTION_SESSION_OPTIONS.value)
    )
    cur.execute(query)
    seen["partial"] = cur.fetchone()[0]
    try:
        conn.adbc_connection.set_options(**{f"{prefix}no_such_option": "true"})
    except Exception as e:
        seen["unknown_error"] = str(e)
conn.close()
print(json.dumps(seen))
