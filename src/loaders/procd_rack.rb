# frozen_string_literal: true
#
# mod_procd's Rack loader, one file: the Ruby standard library and rack.
#
# Shipped inside mod_procd.so and written to the runtime dir by the manager,
# which starts it as: ruby procd_rack.rb (or `command=`, e.g. bundle exec
# ruby), with
#   fd 3   the group's listening socket (LISTEN_FDS=1)
#   fd 4   the status channel: we write READY; EOF means "drain and exit"
#   PROCD_APP                 the rackup file (config.ru) of a mount; without
#                             it, each request's SCRIPT_FILENAME is loaded
#   PROCD_THREADS             requests served at once by this process
#   PROCD_REQUEST_TIMEOUT_MS  a request running longer makes this process
#                             log every thread's backtrace and exit
#                             (replaced); time blocked on Apache (sending to
#                             it, waiting for a BODY frame) does not count
#   PROCD_MAX_REQUESTS        after that many requests, write RECYCLE on fd 4 and
#                             serve on until EOF there (0: never)
# A request that waited in the queue longer than its PROCD_QUEUE_TIMEOUT_MS
# (both in the REQUEST) was answered 503 by Apache: it is dropped unrun, with
# one line on stderr; so is one whose connection Apache has closed already,
# when that is seen (looked at past half the queue-timeout: before that
# Apache has answered nobody else, and a request whose client left is run).
# The frames and the launch contract are in src/protocol/PROTOCOL.md; the
# Python loader (procd_wsgi.py) is the reference this one mirrors.
#
# Rack: the SPEC of Rack 2 (rack.input rewindable, spooled to a temporary
# file past 64 KiB as it is read) and what Rack 3 adds (header values as
# arrays, bodies that respond to `call` only, rack.response_finished).
# rack.hijack is not offered (rack.hijack? is false).

$stdout.sync = true
$stderr.sync = true

require "socket"
require "stringio"
require "tempfile"
# Every common server has loaded it by the time an app runs; Rack 2.2's
# Lint uses it without requiring it.
require "uri"

begin
  require "rack"
rescue LoadError => e
  $stderr.puts "procd_rack[#{Process.pid}]: cannot load rack (#{e.message}): install the Debian package " \
               "ruby-rack (apt-get install ruby-rack), or run a bundle that has it with command=\"bundle exec ruby\""
  exit 1
end

module ProcdRack
  VERSION = 1
  REQUEST = 0x01
  BODY = 0x02
  HELLO = 0x10
  PULL = 0x11
  HEADERS = 0x12
  DATA = 0x13
  FLUSH = 0x14
  FRAME_END = 0x15
  ERROR = 0x16
  MAX_FRAME = 1 << 20
  BINARY = Encoding::ASCII_8BIT
  # HELLO with this process's pid, made once (Process.pid is a system call
  # each time; the loader never forks).
  HELLO_FRAME = [HELLO, 5, VERSION, Process.pid].pack("CNCN").freeze

  # Apache (or the client behind it) went away; not the application's fault.
  class TransportError < StandardError; end

  # Apache no longer waits for this request: it is not run.
  class Dropped < StandardError; end

  def self.log(message)
    $stderr.write("procd_rack[#{Process.pid}]: #{message}\n")
  end

  # Client-controlled text for a log line: non-printable ASCII as \xNN.
  def self.printable(text)
    text.to_s.b.each_byte.map { |c| c >= 0x20 && c <= 0x7e && c != 0x5c ? c.chr : format("\\x%02x", c) }.join
  end

  def self.monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # A string of decimal digits as an Integer; nil for anything else.
  def self.decimal(text)
    text.to_i if text && !text.empty? && text.count("0-9") == text.length
  end

  # Why Apache no longer waits for this request (it answered 503 after
  # queue-timeout, or its client left), or nil. See PROTOCOL.md.
  def self.abandoned(sock, env)
    # Apache gives a request up only at its queue deadline, so a request
    # read well before it is answered by nobody else: the look at the
    # connection (one more system call) is made only past half the
    # queue-timeout.
    queued_at = decimal(env["PROCD_QUEUED_AT_MS"])
    timeout = decimal(env["PROCD_QUEUE_TIMEOUT_MS"])
    if queued_at && timeout
      waited = Process.clock_gettime(Process::CLOCK_REALTIME, :millisecond) - queued_at
      # Apache answers 503 at the deadline and closes just after: a request
      # read in that last moment counts as too old as well.
      if waited >= timeout - 5
        return "it waited #{waited} ms in the queue, longer than queue-timeout (#{timeout} ms): Apache answered 503"
      end
      return nil if waited < timeout / 2
    end
    begin
      peeked = sock.recv_nonblock(1, Socket::MSG_PEEK, exception: false)
      if peeked.nil? || peeked == ""
        return "Apache closed the connection before the request started (it answered 503 after queue-timeout)"
      end
    rescue SystemCallError => e
      return "the connection is broken: #{e.message}"
    end
    nil
  end

  # How long a request has run, less the time blocked on Apache (sending
  # while Apache writes to a slow client, waiting for a BODY frame while
  # Apache reads a slow upload): request-timeout measures the application.
  # Written by the request's thread, read by the watchdog (main) thread.
  class RequestClock
    def initialize
      @start = ProcdRack.monotonic
      @excluded = 0.0
      @blocked = nil
    end

    def block
      @blocked = ProcdRack.monotonic
    end

    def unblock
      since = @blocked
      return if since.nil?

      @excluded += ProcdRack.monotonic - since
      @blocked = nil
    end

    def running(now)
      blocked = @blocked
      excluded = @excluded
      excluded += now - blocked unless blocked.nil?
      now - @start - excluded
    end
  end

  def self.encode_pairs(pairs)
    out = [pairs.length].pack("N")
    pairs.each do |name, value|
      out << [name.bytesize, name, value.bytesize, value].pack("Na*Na*")
    end
    out
  end

  # Frames over one connection. Outgoing frames are collected with `queue`
  # and written in one system call by `send_queued`.
  class Connection
    attr_reader :sock
    attr_accessor :outbox

    def initialize(sock, clock)
      @sock = sock
      @clock = clock
      @inbox = String.new(encoding: BINARY)
      @outbox = []
      # HELLO rides along with the first frame we send anyway (Apache knows
      # the request was taken when the kernel says we read it).
      @hello = HELLO_FRAME
    end

    def queue(kind, payload = "".b)
      @outbox << [kind, payload.bytesize].pack("CN") << payload
    end

    def queue_data(data)
      data = data.b
      if data.bytesize <= MAX_FRAME
        queue(DATA, data)
      else
        (0...data.bytesize).step(MAX_FRAME) { |start| queue(DATA, data.byteslice(start, MAX_FRAME)) }
      end
    end

    def send_queued
      return if @outbox.empty?

      data = @outbox.join
      @outbox = []
      if @hello
        data = @hello + data
        @hello = nil
      end
      @clock.block
      begin
        @sock.write(data)
      rescue IOError, SystemCallError => e
        raise TransportError, "cannot send to Apache: #{e.message}"
      ensure
        @clock.unblock
      end
    end

    def send(kind, payload = "".b)
      queue(kind, payload)
      send_queued
    end

    def fill(n)
      while @inbox.bytesize < n
        @clock.block
        begin
          chunk = @sock.readpartial([n - @inbox.bytesize, 1 << 16].max)
        rescue EOFError
          raise TransportError, "Apache closed the connection"
        rescue IOError, SystemCallError => e
          raise TransportError, "cannot read from Apache: #{e.message}"
        ensure
          @clock.unblock
        end
        @inbox << chunk
      end
    end

    def receive
      fill(5)
      kind, length = @inbox.unpack("CN")
      raise TransportError, "frame of #{length} bytes from Apache" if length > MAX_FRAME

      fill(5 + length)
      payload = @inbox.byteslice(5, length)
      @inbox = @inbox.byteslice(5 + length, @inbox.bytesize - 5 - length)
      [kind, payload]
    end
  end

  # rack.input: the request body, pulled from Apache only when the
  # application reads it. What was read is kept (in memory, then in a
  # temporary file past 64 KiB) so that `rewind` works, as Rack 2 requires.
  class Input
    SPOOL_IN_MEMORY = 64 << 10

    def initialize(conn, length)
      @conn = conn
      @remaining = length # nil: unknown (chunked)
      @eof = length.zero? if length
      @eof ||= false
      @spool = nil # made when first needed: most requests have no body
      @spooled = 0
    end

    # Up to `want` more bytes from Apache, appended to the spool; "" at the end.
    def pull(want)
      return "".b if @eof

      want = [want, @remaining].min if @remaining
      want = want.clamp(1, MAX_FRAME)
      @conn.send(PULL, [want].pack("N"))
      kind, payload = @conn.receive
      raise TransportError, format("expected BODY, got frame 0x%02x", kind) if kind != BODY

      if payload.empty?
        @eof = true
      elsif @remaining
        @remaining -= payload.bytesize
        @eof = true if @remaining <= 0
      end
      unless payload.empty?
        at = spool.pos
        spool.seek(0, IO::SEEK_END)
        spool.write(payload)
        spool.seek(at)
        @spooled += payload.bytesize
        to_file if @spool.is_a?(StringIO) && @spooled > SPOOL_IN_MEMORY
      end
      payload
    end

    def to_file
      file = Tempfile.new("procd-rack-input")
      file.unlink
      file.binmode
      at = spool.pos
      file.write(spool.string)
      file.seek(at)
      @spool = file
    end

    def spool
      @spool ||= StringIO.new(String.new(encoding: BINARY))
    end

    # Buffered bytes not yet given to the application.
    def buffered
      @spool ? @spooled - @spool.pos : 0
    end

    def fill_to(size)
      pull([size - buffered, 8192].max) while buffered < size && !@eof
    end

    def read(length = nil, outbuf = nil)
      if length.nil?
        pull(1 << 16) until @eof
        data = spool.read || "".b
      else
        raise ArgumentError, "negative length #{length} given" if length.negative?

        fill_to(length)
        data = length.zero? ? "".b : spool.read(length) # nil at the end
      end
      data = data&.b
      if outbuf
        outbuf.replace(data || "".b)
        data = outbuf if data
      end
      data
    end

    def gets
      loop do
        # What is buffered: a line, or pull more.
        at = spool.pos
        line = spool.gets
        if line && (line.end_with?("\n") || @eof)
          return line.b
        end

        spool.seek(at)
        return (line&.b) if @eof

        pull(8192)
      end
    end

    def each
      while (line = gets)
        yield line
      end
    end

    def rewind
      spool.rewind
      0
    end

    def close; end
  end

  # A Rack 3 streaming body (one that responds to `call` only) is given this.
  class Stream
    def initialize(input, output)
      @input = input
      @output = output
      @closed = false
    end

    def read(length = nil, outbuf = nil)
      @input.read(length, outbuf)
    end

    def write(data)
      @output.call(data.to_s)
      data.to_s.bytesize
    end

    def <<(data)
      write(data)
      self
    end

    def flush
      self
    end

    def close_read; end

    def close_write
      @closed = true
    end

    def close
      @closed = true
    end

    def closed?
      @closed
    end
  end

  # The mounted app (PROCD_APP), or per-file rackup scripts cached by mtime.
  class Applications
    def initialize(app_path)
      roots = ENV.fetch("PROCD_SCRIPT_ROOTS", "")
      # Where per-request scripts may be (the directories where the group is
      # named by LanguageHandler): whoever can connect to the group's socket
      # must not make it load any other file.
      @roots = roots.split("\n").select { |r| r.start_with?("/") }.map { |r| realpath(r) }.compact
      @extensions = ENV.fetch("PROCD_SCRIPT_EXTS", "").split.select { |e| e.start_with?(".") }
      @cache = {}
      @lock = Mutex.new
      @mounted = app_path ? load(app_path) : nil
    end

    def realpath(path)
      File.realpath(path)
    rescue SystemCallError
      nil
    end

    def load(path)
      directory = File.dirname(File.expand_path(path))
      $LOAD_PATH.unshift(directory) unless $LOAD_PATH.include?(directory)
      built = Rack::Builder.parse_file(path)
      # Rack 2 returns [app, options], Rack 3 the app.
      app = built.is_a?(Array) ? built.first : built
      raise LoadError, "#{path} defines no Rack application (run ...)" unless app.respond_to?(:call)

      app
    end

    def for_request(env)
      return @mounted if @mounted

      path = env["SCRIPT_FILENAME"].to_s
      # Checked and then loaded by its resolved name: a link swapped in
      # between cannot redirect the load.
      real = realpath(path) || path
      unless @roots.any? { |r| real == r || real.start_with?(r.chomp("/") + "/") }
        raise SecurityError, "refusing to load #{path.inspect}: it is not under a directory where this group is " \
                             "named by LanguageHandler (#{@roots.empty? ? 'none' : @roots.join(', ')})"
      end
      unless @extensions.any? { |e| File.basename(real).downcase.end_with?(e.downcase) }
        raise SecurityError, "refusing to load #{path.inspect}: its name does not end with an extension " \
                             "LanguageHandler maps to this group (#{@extensions.empty? ? 'none' : @extensions.join(' ')})"
      end
      mtime = File.stat(real).mtime
      @lock.synchronize do
        cached = @cache[real]
        if cached.nil? || cached[0] != mtime
          cached = [mtime, load(real)]
          @cache[real] = cached
        end
        cached[1]
      end
    end
  end

  # The response headers of a Rack response as (name, value) pairs: a value
  # with newlines (Rack 2) or an Array of values (Rack 3) is several headers.
  def self.header_pairs(headers)
    raise TypeError, "response headers must be a Hash, got #{headers.class}" unless headers.respond_to?(:each)

    pairs = []
    headers.each do |name, value|
      raise TypeError, "response header names must be Strings, got #{name.inspect}" unless name.is_a?(String)
      next if name.start_with?("rack.")

      if value.is_a?(Array)
        value.each { |v| pairs << [name, v.to_s] }
      else
        # As String#split("\n"): an empty value is no header at all.
        value = value.to_s
        if value.include?("\n")
          value.split("\n").each { |v| pairs << [name, v] }
        elsif !value.empty?
          pairs << [name, value]
        end
      end
    end
    pairs
  end

  def self.status_code(status)
    code = status.is_a?(Integer) ? status : Integer(status, exception: false) || (status.respond_to?(:to_i) ? status.to_i : 0)
    unless (200..599).cover?(code)
      # Apache refuses interim (1xx) and out-of-range statuses with a 502.
      raise ArgumentError, "invalid status #{status.inspect}: a response status is 200 to 599"
    end

    code
  end

  # Rack servers give PATH_INFO as the client wrote it (percent-encoded);
  # Apache gives it decoded. The end of REQUEST_URI's path is taken when it
  # decodes to Apache's PATH_INFO, else PATH_INFO is encoded again.
  def self.raw_path_info(decoded, request_uri)
    return decoded if decoded.empty?

    segments = decoded.count("/")
    raw = request_uri.split("?", 2).first.to_s.split("/", -1)
    if raw.length > segments
      candidate = "/" + raw.last(segments).join("/")
      return candidate if Rack::Utils.unescape_path(candidate).b == decoded.b
    end
    Rack::Utils.escape_path(decoded).b
  rescue ArgumentError, Encoding::CompatibilityError
    Rack::Utils.escape_path(decoded.b).b
  end

  # rack.version: the loaded rack's Rack::VERSION where it defines one.
  RACK_VERSION = defined?(Rack::VERSION) ? Rack::VERSION : [1, 3]

  def self.handle(conn, apps, threads)
    kind, payload = conn.receive
    raise TransportError, "expected a version #{VERSION} REQUEST" if kind != REQUEST || payload.empty? || payload.getbyte(0) != VERSION

    fields = payload.byteslice(1, payload.bytesize - 1).split("\0", -1)
    env = {}
    i = 0
    last = fields.length - 1
    while i < last
      env[fields[i]] = fields[i + 1]
      i += 2
    end
    why = abandoned(conn.sock, env)
    raise Dropped, "#{env.fetch('REQUEST_METHOD', '?')} #{printable(env.fetch('REQUEST_URI', '?'))}: #{why}" if why

    env.delete("PROCD_QUEUED_AT_MS")
    env.delete("PROCD_QUEUE_TIMEOUT_MS")
    # Rack wants these only without the HTTP_ prefix.
    env.delete("HTTP_CONTENT_TYPE")
    env.delete("HTTP_CONTENT_LENGTH")
    length = env["CONTENT_LENGTH"].to_s
    https = env["REQUEST_SCHEME"] == "https" || ((flag = env["HTTPS"]) && (flag == "1" || flag.casecmp?("on")))
    input = Input.new(conn, decimal(length))
    finished = []
    # One key at a time: no temporary Hash per request.
    env["rack.version"] = RACK_VERSION
    env["rack.url_scheme"] = https ? "https" : "http"
    env["rack.input"] = input
    env["rack.errors"] = $stderr
    env["rack.multithread"] = threads > 1
    env["rack.multiprocess"] = true
    env["rack.run_once"] = false
    env["rack.hijack?"] = false
    env["rack.response_finished"] = finished
    env["SCRIPT_NAME"] ||= ""
    env["PATH_INFO"] ||= ""
    env["QUERY_STRING"] ||= ""
    env["SERVER_NAME"] ||= "localhost"
    env["SERVER_PORT"] ||= "80"
    env["PATH_INFO"] = raw_path_info(env["PATH_INFO"], env["REQUEST_URI"].to_s)
    # Rack's rule: SCRIPT_NAME is never "/" (the root mount is "").
    if env["SCRIPT_NAME"] == "/"
      env["SCRIPT_NAME"] = ""
      env["PATH_INFO"] = "/" + env["PATH_INFO"].delete_prefix("/")
    end

    status = headers = body = nil
    error = nil
    exits = false
    sent = false
    begin
      app = apps.for_request(env)
      status, headers, body = app.call(env)
      code = status_code(status)
      pairs = header_pairs(headers)
      send_headers = lambda do
        conn.queue(HEADERS, [code].pack("n") + encode_pairs(pairs))
        sent = true
      end
      if body.respond_to?(:each)
        # An Array (or anything with to_ary) is sent in one go; any other
        # body is streamed, each part flushed to the client as it comes.
        stream = !body.respond_to?(:to_ary)
        body.each do |chunk|
          raise TypeError, "the body must yield Strings, not #{chunk.class}" unless chunk.is_a?(String)
          next if chunk.empty?

          send_headers.call unless sent
          conn.queue_data(chunk)
          next unless stream

          conn.queue(FLUSH)
          conn.send_queued
        end
      elsif body.respond_to?(:call)
        send_headers.call
        conn.send_queued
        output = lambda do |data|
          next if data.empty?

          conn.queue_data(data)
          conn.queue(FLUSH)
          conn.send_queued
        end
        body.call(Stream.new(input, output))
      else
        raise TypeError, "the body must respond to each or call, got #{body.class}"
      end
      send_headers.call unless sent
      conn.queue(FRAME_END)
      conn.send_queued
    rescue TransportError => e
      error = e
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException -- the app's failure must not end the thread
      # Anything the app raises (an Interrupt, a NoMemoryError too) is its
      # failure: a 500 and its backtrace in the log. After an exit the
      # process also asks to be recycled (the caller sees true), so it ends
      # as asked without ending a request of another thread.
      exits = e.is_a?(SystemExit)
      error = e
      what = exits ? "the application called exit (this worker is recycled)" : "application error"
      log("#{what} in #{printable(env['REQUEST_METHOD'])} #{printable(env['REQUEST_URI'])}:\n".b +
          "#{e.class}: #{e.message}".b + "\n" + (e.backtrace || []).map { |l| "\tfrom #{l}".b }.join("\n").b)
      message = "#{e.class}: #{e.message}".b.byteslice(0, 4096)
      conn.outbox = [] # what the app had produced is not sent
      begin
        conn.send(ERROR, [message.bytesize].pack("N") + message)
      rescue TransportError => t
        raise unless exits

        log("request abandoned: #{t.message}") # the exit is still honoured
      end
    ensure
      # The app's cleanup may fail or exit too; neither ends this thread.
      begin
        body.close if body.respond_to?(:close)
      rescue Exception => e # rubocop:disable Lint/RescueException -- as above
        exits ||= e.is_a?(SystemExit)
        log("the body's close failed: #{e.class}: #{e.message}") unless e.is_a?(SystemExit)
      end
      finished.reverse_each do |callback|
        callback.call(env, status, headers, error)
      rescue Exception => e # rubocop:disable Lint/RescueException -- as above
        exits ||= e.is_a?(SystemExit)
        log("rack.response_finished callback failed: #{e.class}: #{e.message}") unless e.is_a?(SystemExit)
      end
    end
    exits
  end

  # Seconds to wait for the manager's answer to RECYCLE before draining anyway.
  RECYCLE_PATIENCE = 60.0

  class Worker
    def initialize
      @threads = [ENV.fetch("PROCD_THREADS", "1").to_i, 1].max
      @timeout = ENV.fetch("PROCD_REQUEST_TIMEOUT_MS", "0").to_i / 1000.0
      @max_requests = ENV.fetch("PROCD_MAX_REQUESTS", "0").to_i
      @listener = UNIXServer.for_fd(3)
      @status = IO.for_fd(4, "r+b", autoclose: false)
      @draining = false
      # Readable once draining: wakes every thread waiting for a
      # connection, so none takes a new one after EOF on fd 4 (the listener
      # is shared with this worker's replacement).
      @wake_r, @wake_w = IO.pipe
      @started = {} # thread -> RequestClock of its current request
      @served = 0
      @recycle_asked = nil # when RECYCLE was sent
      @stuck = nil # the thread past request-timeout, once seen
      @stuck_at = 0.0
      @dropped = 0
      @lock = Mutex.new
      app = ENV["PROCD_APP"]
      @apps = Applications.new(app.nil? || app.empty? ? nil : app)
    end

    def serve_one(sock)
      clock = RequestClock.new
      @started[Thread.current] = clock
      conn = Connection.new(sock, clock)
      exits = false
      begin
        exits = ProcdRack.handle(conn, @apps, @threads)
      rescue Dropped => e
        dropped = @lock.synchronize { @dropped += 1 }
        ProcdRack.log("request dropped unrun (#{dropped} so far): #{e.message}")
        return
      rescue TransportError => e
        ProcdRack.log("request abandoned: #{e.message}")
      rescue Exception => e # rubocop:disable Lint/RescueException -- a lost thread is a lost request slot
        # Never let anything end this thread's accept loop.
        exits ||= e.is_a?(SystemExit)
        ProcdRack.log("internal error in the loader: #{e.class}: #{e.message}\n#{(e.backtrace || []).join("\n")}")
      ensure
        begin
          sock.close
        rescue IOError, SystemCallError
          nil
        end
        @started.delete(Thread.current)
      end
      @lock.synchronize do
        @served += 1
        if exits
          ask_recycle("application-exit")
        elsif @max_requests.positive? && @served == @max_requests
          ask_recycle("maximum-requests")
        end
      end
    end

    # Send RECYCLE once (the protocol allows one): the manager starts a
    # replacement and, once it is ready, closes fd 4; then this process
    # drains. Until then it serves, so the group never lacks a worker.
    def ask_recycle(reason)
      return if @recycle_asked

      @recycle_asked = ProcdRack.monotonic
      begin
        @status.syswrite("RECYCLE #{reason}\n")
      rescue IOError, SystemCallError
        drain
      end
    end

    # Finish what is held, serve what is already queued, then end.
    def drain
      return if @draining

      @draining = true
      @wake_w.write_nonblock("x", exception: false)
    end

    def accept_loop
      loop do
        draining = @draining
        # Under load a connection is usually waiting already: take it
        # before asking the kernel to wait (one system call fewer).
        sock = @listener.accept_nonblock(exception: false)
        if sock == :wait_readable
          return if draining

          IO.select([@listener, @wake_r], nil, nil, 0.5)
          next
        end
        sock.sync = true
        sock.binmode
        serve_one(sock)
      end
    rescue IOError, SystemCallError => e
      ProcdRack.log("cannot accept: #{e.class}: #{e.message}")
    end

    # Main thread: status channel and request timeouts.
    def watchdog
      status_open = true
      while @pool.any?(&:alive?)
        readable = status_open ? IO.select([@status], nil, nil, 0.5) : (sleep(0.5) && nil)
        if readable
          eof = begin
            @status.read_nonblock(64, exception: false).nil?
          rescue SystemCallError
            true
          end
          if eof
            status_open = false
            drain
          end
        end
        # A manager that does not answer RECYCLE (an older build): drain anyway.
        drain if @recycle_asked && ProcdRack.monotonic - @recycle_asked > RECYCLE_PATIENCE
        next unless @timeout.positive?

        now = ProcdRack.monotonic
        # One second after Apache's own deadline: Apache answers 504 first,
        # then this process goes.
        late = @started.to_a.find { |_, clock| clock.running(now) > @timeout + 1.0 }
        if late && @stuck.nil?
          # The stuck thread cannot be stopped: this process takes no new
          # request, asks the manager for a replacement, and exits once its
          # other threads have finished theirs.
          @stuck = late[0]
          @stuck_at = now
          ProcdRack.log("request-timeout (#{@timeout.round} s) exceeded in thread #{late[0].name}; this process takes " \
                        "no new request and exits once its other requests are done. Stacks of all threads:")
          Thread.list.each do |t|
            ProcdRack.log("thread #{t.name || t.object_id}:\n#{(t.backtrace || []).map { |l| "\t#{l}" }.join("\n")}")
          end
          @lock.synchronize { ask_recycle("request-timeout") }
          drain
        end
        next if @stuck.nil?

        others = @started.keys.reject { |t| t == @stuck }
        # The others have their own deadlines; past them, go anyway.
        exit!(3) if others.empty? || now - @stuck_at > @timeout + 1.0
      end
    end

    def run
      @status.syswrite("READY\n")
      @pool = Array.new(@threads) do |i|
        Thread.new do
          Thread.current.name = "request-#{i}"
          Thread.current.report_on_exception = true
          accept_loop
        end
      end
      watchdog
    end
  end

  def self.main
    begin
      worker = Worker.new
    rescue Exception => e # rubocop:disable Lint/RescueException -- a config.ru may raise anything
      raise if e.is_a?(SystemExit)

      log("cannot load the application:\n#{e.class}: #{e.message}\n#{(e.backtrace || []).map { |l| "\tfrom #{l}" }.join("\n")}")
      exit 1
    end
    worker.run
  end
end

ProcdRack.main
