# A plain Sinatra app (modular style), as any Sinatra user would write it.
require_relative "app"
run SinatraTest
