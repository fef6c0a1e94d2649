<?php
// The CGI environment PHP sees, the request's query/form data and body.
header('Content-Type: application/json');
$keys = ['SCRIPT_FILENAME', 'SCRIPT_NAME', 'PATH_INFO', 'PATH_TRANSLATED', 'PHP_SELF', 'DOCUMENT_ROOT',
    'REQUEST_URI', 'QUERY_STRING', 'REQUEST_METHOD', 'CONTENT_TYPE', 'CONTENT_LENGTH', 'SERVER_NAME',
    'SERVER_PORT', 'SERVER_PROTOCOL', 'SERVER_SOFTWARE', 'REMOTE_ADDR', 'REMOTE_PORT', 'HTTPS',
    'REMOTE_USER', 'REDIRECT_STATUS', 'GATEWAY_INTERFACE', 'HTTP_HOST', 'HTTP_X_CUSTOM', 'HTTP_PROXY',
    'HTTP_AUTHORIZATION'];
$out = [];
foreach ($keys as $k) {
    if (isset($_SERVER[$k])) {
        $out[$k] = (string)$_SERVER[$k];
    }
}
$out['getenv_PROCD_TEST_ENV'] = (string)getenv('PROCD_TEST_ENV');
$out['getenv_HTTP_PROXY'] = getenv('HTTP_PROXY') === false ? '' : getenv('HTTP_PROXY');
$out['get'] = $_GET;
$out['post'] = $_POST;
$body = file_get_contents('php://input');
$out['body_len'] = strlen($body);
$out['body_sha256'] = hash('sha256', $body);
$out['uid'] = posix_geteuid();
$out['user'] = posix_getpwuid(posix_geteuid())['name'];
$out['pid'] = getmypid();
echo json_encode($out, JSON_UNESCAPED_SLASHES), "\n";
