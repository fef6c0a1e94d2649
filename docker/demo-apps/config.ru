# mod_procd demo: Ruby (Sinatra on Rack), as user procd-demo-rb.
require "sinatra/base"

class Demo < Sinatra::Base
  get "/" do
    "<h1>Hello from Sinatra #{Sinatra::VERSION}</h1><p>Ruby #{RUBY_VERSION}, pid #{Process.pid}, " \
      "mounted at #{request.script_name}</p><p><a href=\"/\">back</a></p>"
  end
end

run Demo
