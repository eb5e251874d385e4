"""The devrun demo: a Flask app. Edit it while `devrun up` runs and watch it reload."""

import os
import time

from flask import Flask, render_template

app = Flask(__name__)
GREETING = os.environ.get("GREETING", "hello")


@app.route("/")
def index() -> str:
    return (
        f"<h1>{GREETING} from devrun</h1>"
        '<ul><li><a href="/page">a template page</a> (edit templates/page.html: no restart)</li>'
        '<li><a href="/testsleep">/testsleep</a> sleeps 10 s; / still answers meanwhile</li>'
        '<li><a href="/boom">/boom</a> raises, to show the debugger</li></ul>'
    )


@app.route("/testsleep")
def testsleep() -> str:
    time.sleep(10)  # gevent-patched: only this request waits
    return "slept 10 s, and nobody else had to wait"


@app.route("/page")
def page() -> str:
    return render_template("page.html", pid=os.getpid())


@app.route("/boom")
def boom() -> str:
    raise RuntimeError("boom: this is what the Werkzeug debugger looks like")
