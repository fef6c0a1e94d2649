<?php
// A front controller (LanguageMount /shop shop, app=.../shop/index.php).
echo "front controller SCRIPT_NAME=", $_SERVER['SCRIPT_NAME'], " PATH_INFO=", $_SERVER['PATH_INFO'] ?? '',
    " QUERY=", $_SERVER['QUERY_STRING'] ?? '', "\n";
