<?php
header('X-Test: yes');
header('X-Multi: one');
header('X-Multi: two', false);
setcookie('a', '1');
setcookie('b', '2');
http_response_code(201);
echo "created\n";
