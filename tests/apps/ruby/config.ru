# The Rack app the tests mount (tests/ruby.rs): one behaviour per PATH_INFO,
# under Rack::Lint, so that every test also checks the loader against the
# Rack SPEC.
require "digest"
require "json"

# A body that is produced while it is sent (not an Array: streamed).
class SlowBody
  def initialize(parts, pause)
    @parts = parts
    @pause = pause
  end

  def each
    @parts.each_with_index do |part, i|
      sleep @pause if i.positive?
      yield part
    end
  end
end

# Streams until the client goes; says in the log when close was called.
class Forever
  def initialize(errors)
    @errors = errors
    @sent = 0
  end

  def each
    loop do
      @sent += 1
      yield "x" * 65_536
      sleep 0.01
    end
  end

  def close
    @errors.puts "forever: closed after #{@sent} chunks"
    @errors.flush
  end
end

# A body whose close calls exit (as a BodyProxy block might).
class ExitOnClose
  def each
    yield "closing\n"
  end

  def close
    exit(4)
  end
end

def utf8(value)
  value.is_a?(String) ? value.dup.force_encoding("UTF-8").scrub : value.to_s
end

def text(body, status = 200, headers = {})
  [status, { "Content-Type" => "text/plain" }.merge(headers), [body]]
end

App = lambda do |env|
  req = Rack::Request.new(env)
  path = env["PATH_INFO"]
  query = Rack::Utils.parse_query(env["QUERY_STRING"])
  case path
  when "", "/", "/env", %r{\A/env/}
    body = env["rack.input"].read
    out = env.select { |_, v| v.is_a?(String) }.to_h { |k, v| [k, utf8(v)] }
    out["body"] = utf8(body)
    out["rack.url_scheme"] = env["rack.url_scheme"]
    out["multithread"] = env["rack.multithread"].to_s
    out["hijack"] = env["rack.hijack?"].to_s
    out["url"] = utf8(req.url)
    out["base_url"] = req.base_url
    out["script_name"] = req.script_name
    [200, { "Content-Type" => "application/json", "Set-Cookie" => "a=1; Path=/\nb=2; Path=/" },
     [JSON.generate(out)]]
  when "/form"
    form = req.POST
    text(form.keys.sort.map { |k| "#{k}=#{form[k]}" }.join("&"))
  when "/upload"
    digest = Digest::SHA256.new
    total = 0
    input = env["rack.input"]
    while (chunk = input.read(65_536))
      digest << chunk
      total += chunk.bytesize
    end
    text("#{digest.hexdigest} #{total}")
  when "/rewind"
    input = env["rack.input"]
    first = input.read
    input.rewind
    again = input.read
    lines = []
    input.rewind
    input.each { |l| lines << l }
    text("#{first.bytesize} #{first == again} #{lines.length} lines")
  when "/stream"
    [200, { "Content-Type" => "text/plain" }, SlowBody.new(["first\n", "second\n"], 1.0)]
  when "/call-body"
    # A Rack 3 streaming body: it responds to call, not each.
    streamer = lambda do |stream|
      stream.write("first\n")
      sleep 1.0
      stream.write("second\n")
      stream.close
    end
    [200, { "Content-Type" => "text/plain" }, streamer]
  when "/redirect"
    [302, { "Location" => "#{req.base_url}#{req.script_name}/env", "Content-Type" => "text/plain" }, ["moved\n"]]
  when "/cookies"
    seen = req.cookies.sort.map { |k, v| "#{k}=#{v}" }.join(";")
    res = Rack::Response.new(["cookies: #{seen}"], 200, "Content-Type" => "text/plain")
    res.set_cookie("one", { value: "1", path: req.script_name + "/" })
    res.set_cookie("two", { value: "2", path: "/", httponly: true })
    res.finish
  when "/big"
    block = (0..255).map(&:chr).join.b * 256 # 64 KiB
    [200, { "Content-Type" => "application/octet-stream" }, SlowBody.new([block] * (query.fetch("mb", "20").to_i * 16), 0)]
  when "/reject"
    text("too large\n", 413)
  when "/sleep"
    sleep query.fetch("s", "1").to_f
    text("slept\n")
  when "/record"
    # One line per request the application really ran.
    File.open(ENV.fetch("RECORD_FILE"), "a") { |f| f.write("#{query.fetch('id', '?')}\n") }
    sleep query.fetch("s", "0").to_f
    text("recorded\n")
  when "/whoami"
    sleep query.fetch("s", "0").to_f
    text("gen=#{ENV['PROCD_GENERATION']} pid=#{Process.pid}\n")
  when "/stderr"
    $stderr.puts "stderr line from the ruby app"
    $stdout.puts "stdout line from the ruby app"
    env["rack.errors"].puts "rack.errors line from the ruby app"
    env["rack.errors"].flush
    text("logged\n")
  when "/raise"
    raise "boom: secret detail"
  when "/die"
    exit!(7)
  when "/exit"
    exit(3)
  when "/exit-in-close"
    [200, { "Content-Type" => "text/plain" }, ExitOnClose.new]
  when "/bad-header"
    text("x", 200, "X-Bad" => "a\r\nInjected: yes")
  when "/forever"
    [200, { "Content-Type" => "application/octet-stream" }, Forever.new(env["rack.errors"])]
  else
    text("no such test\n", 404)
  end
end

LINTED = Rack::Builder.new do
  use Rack::Lint
  use Rack::Head
  run App
end.to_app

# What Rack 2's Lint refuses on purpose: a Rack 3 body (call, no each) and
# a header the loader must pass on for Apache to refuse.
UNLINTED = %w[/call-body /bad-header].freeze

run(lambda do |env|
  UNLINTED.include?(env["PATH_INFO"]) ? App.call(env) : LINTED.call(env)
end)
