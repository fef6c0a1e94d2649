# A Mojolicious::Lite app, as written for any PSGI server.
use Mojolicious::Lite -signatures;

get '/' => sub ($c) { $c->render(text => 'index; hello is at ' . $c->url_for('hello')) };
get '/hello' => sub ($c) { $c->render(text => 'hello from mojolicious; base=' . $c->req->url->base->path) } => 'hello';
get '/go' => sub ($c) { $c->redirect_to('hello') };
post '/form' => sub ($c) { $c->render(text => 'name=' . $c->param('name')) };

app->start;
