"""A plain WSGI app built by a factory: no framework needed."""

import json


def create_app(name: str = "api"):
    def application(environ, start_response):
        body = json.dumps({"app": name, "path": environ["PATH_INFO"]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return application
