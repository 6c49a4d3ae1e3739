"""Makes a bucket on an S3-compatible server and copies a folder's files into it.

Usage: s3_bucket.py ENDPOINT BUCKET PREFIX FOLDER

The keys are PREFIX/<path under FOLDER>. Credentials and region come from the usual
AWS_* environment variables.
"""

import os
import sys

import boto3


def main() -> None:
    endpoint, bucket, prefix, folder = sys.argv[1:5]
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    for parent, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(parent, name)
            key = f"{prefix}/{os.path.relpath(path, folder)}"
            s3.upload_file(path, bucket, key)


if __name__ == "__main__":
    main()
