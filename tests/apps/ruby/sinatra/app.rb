require "sinatra/base"

class SinatraTest < Sinatra::Base
  get "/" do
    "index; hello is at #{url('/hello', false)}"
  end

  get "/hello" do
    "hello from sinatra; script_name=#{request.script_name}"
  end

  get "/go" do
    redirect to("/hello")
  end

  post "/form" do
    "name=#{params['name']}"
  end

  get "/stream" do
    stream do |out|
      out << "first\n"
      sleep 1
      out << "second\n"
    end
  end

  get "/versions" do
    "rack #{Rack.release}; sinatra #{Sinatra::VERSION}; bundler #{defined?(Bundler) ? Bundler::VERSION : 'none'}"
  end
end
