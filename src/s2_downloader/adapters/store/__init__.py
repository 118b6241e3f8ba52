"""The product stores: ``efs`` (the mount), ``s3`` (a bucket) and ``md5state`` (what S3 resumes with).

Nothing is imported here, so that a command using one store never loads the other's
libraries (boto3 for S3): import ``s2_downloader.adapters.store.efs`` or ``.s3``.
"""

__all__: list[str] = []
