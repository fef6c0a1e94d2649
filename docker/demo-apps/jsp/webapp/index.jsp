<%@ page contentType="text/html; charset=UTF-8" %>
<!DOCTYPE html>
<html><head><title>JSP under mod_procd</title></head><body>
<h1>Hello from JSP (Tomcat <%= application.getServerInfo() %>)</h1>
<p>6 * 7 = <%= 6 * 7 %></p>
<p>context <%= request.getContextPath() %>, URI <%= request.getRequestURI() %>,
user <%= System.getProperty("user.name") %>, forwarded for <%= request.getHeader("X-Forwarded-For") %></p>
<p><a href="/">back</a></p>
</body></html>
