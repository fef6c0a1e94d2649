# A Dancer2 app, as written for any PSGI server.
use Dancer2;

set logger => 'null';

get '/' => sub { 'index; hello is at ' . (uri_for('/hello') =~ s{^https?://[^/]+}{}r) };
get '/hello' => sub { 'hello from dancer2; script_name=' . request->script_name };
get '/go' => sub { redirect '/hello' };
post '/form' => sub { 'name=' . body_parameters->get('name') };

to_app;
