echo "HTTP/1.1 200 OK"
