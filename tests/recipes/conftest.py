# apps/ are the servers the recipe tests start; projects/ are small pytest projects that
# test_recipe_pytest.py copies and runs in a pytest of their own.  Neither is collected here.
collect_ignore = ["apps", "projects"]
