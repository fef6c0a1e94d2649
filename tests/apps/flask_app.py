"""A small Flask app mounted under a prefix: its links must include it."""
from flask import Flask, redirect, request, url_for

app = Flask(__name__)


@app.route("/")
def index():
    return "index; hello is at " + url_for("hello")


@app.route("/hello")
def hello():
    return "hello from flask; script_root=" + request.script_root


@app.route("/go")
def go():
    return redirect(url_for("hello"))


@app.route("/form", methods=["POST"])
def form():
    return "name=" + request.form.get("name", "")


application = app
