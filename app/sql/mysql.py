def classify_mysql(sql): return []
