"""An outside Flight SQL client of an older kind: flightsql-dbapi (Python DB-API). It binds
each value as a dense union, so that one column can take a value of any type, and runs a
prepared statement by the handle it was prepared with, dropping the one the bind answers.

Usage: dbapi_client.py ADDR TOKEN COUNTY
Prints one JSON object with what the client saw.
"""
import json
import sys

from flightsql import FlightSQLClient, connect

addr, token, county = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = addr.rsplit(":", 1)
client = FlightSQLClient(host=host, port=int(port), token=token, insecure=True)
cur = connect(client).cursor()


def count(query, params=None):
    cur.execute(query, params)
    ((n,),) = cur.fetchall()
    return n


bound = "SELECT count(*) AS n FROM disbursements WHERE county_code = ? AND amount >= ?"
print(json.dumps({
    "county": count(bound, (county, 0)),
    "county_over": count(bound, (county, 100.5)),
    "county_over_literal": count(
        f"SELECT count(*) AS n FROM disbursements WHERE county_code = '{county}' AND amount >= 100.5"
    ),
    "no_county": count(bound, ("999999", 0)),
}))
